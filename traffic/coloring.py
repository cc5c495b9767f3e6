"""Equitable edge colouring of a bipartite multigraph (König): pieces between leaves onto spines.

Each vertex of degree d is split into ceil(d / k) virtual vertices of degree <= k; a proper
k-edge-colouring of that graph (always possible for bipartite graphs, by flipping alternating
paths) puts at most ceil(d / k) edges of every colour on each original vertex.
"""

from __future__ import annotations


def equitable_colouring(edges: list[tuple[object, object]], k: int) -> list[int]:
    """Colour (0..k-1) per edge (u from the left side, v from the right) with each vertex's colours balanced."""
    if k < 1:
        raise ValueError("need at least one colour")
    seen_left: dict[object, int] = {}
    seen_right: dict[object, int] = {}
    virt: list[tuple[tuple, tuple]] = []
    for u, v in edges:
        i = seen_left.get(u, 0)
        j = seen_right.get(v, 0)
        seen_left[u], seen_right[v] = i + 1, j + 1
        virt.append((("L", u, i // k), ("R", v, j // k)))
    # at[vertex][colour] -> edge index
    at: dict[tuple, dict[int, int]] = {}
    colour = [-1] * len(virt)
    for e, (u, v) in enumerate(virt):
        au = at.setdefault(u, {})
        av = at.setdefault(v, {})
        a = next(c for c in range(k) if c not in au)
        if a not in av:
            colour[e] = a
            au[a] = av[a] = e
            continue
        b = next(c for c in range(k) if c not in av)
        # flip the a/b alternating path that starts at v with colour a; it cannot reach u (bipartite)
        path = []
        node, want = v, a
        while True:
            edge = at[node].get(want)
            if edge is None:
                break
            path.append(edge)
            x, y = virt[edge]
            node = y if x == node else x
            want = b if want == a else a
        for edge in path:
            x, y = virt[edge]
            old = colour[edge]
            new = b if old == a else a
            for w in (x, y):
                if at[w].get(old) == edge:
                    del at[w][old]
        for edge in path:
            x, y = virt[edge]
            new = b if colour[edge] == a else a
            colour[edge] = new
            at[x][new] = at[y][new] = edge
        colour[e] = a
        au[a] = av[a] = e
    return colour
