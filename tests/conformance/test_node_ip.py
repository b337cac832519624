"""``node:<ip>`` resources and ``unipar.util.get_node_ip_address()`` (as in Ray): every node
has ``node:<its ip>`` = 1, shown in cluster_resources(), so work can be pinned to a machine."""

from __future__ import annotations

import unipar
from unipar.util import get_node_ip_address


@unipar.remote
def where():
    return get_node_ip_address()


def test_get_node_ip_address_names_a_node(unipar_backend):
    ip = get_node_ip_address()
    assert ip in {n["NodeManagerAddress"] for n in unipar.nodes()}
    assert unipar.get(where.remote(), timeout=60) in {n["NodeManagerAddress"]
                                                      for n in unipar.nodes()}


def test_node_ip_resource_pins_work_to_its_node(unipar_backend):
    ip = get_node_ip_address()
    assert unipar.cluster_resources().get(f"node:{ip}", 0) >= 1
    pinned = where.options(resources={f"node:{ip}": 0.01})
    assert unipar.get([pinned.remote() for _ in range(3)], timeout=60) == [ip] * 3
