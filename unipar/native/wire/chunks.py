"""The size of the pieces big objects travel in, between nodes and to or from a remote driver
(node side: :mod:`..node.transfers`; remote driver side: :mod:`..client.transfer`)."""

# 8 MiB chunks: the cost per frame (a few tens of microseconds) is noise at that size, and the
# WINDOW chunks in flight (32 MiB) bound what either side holds beyond the file itself, while
# keeping a LAN pipe full (its bandwidth-delay product is far below 32 MiB).
CHUNK_SIZE = 8 * 1024 * 1024
WINDOW = 4
