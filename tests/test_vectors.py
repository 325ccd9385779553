"""Known answers from wireguard-go's own tests: the KDF, the replay window and
the TAI64N ordering (device/kdf_test.go, replay/replay_test.go,
tai64n/tai64n_test.go)."""

import pytest

from meshnode.wireguard.crypto import kdf1, kdf2, kdf3
from meshnode.wireguard.replay import WINDOW_SIZE, ReplayWindow
from meshnode.wireguard.tai64n import is_after, stamp

KDF_VECTORS = [
    (
        "746573742d6b6579",
        "746573742d696e707574",
        "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
        "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
        "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
    ),
    (
        "776972656775617264",
        "776972656775617264",
        "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
        "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
        "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
    ),
    (
        "",
        "",
        "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
        "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
        "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    ),
]


@pytest.mark.parametrize(("key", "data", "t0", "t1", "t2"), KDF_VECTORS)
def test_kdf_vectors(key: str, data: str, t0: str, t1: str, t2: str) -> None:
    k, d = bytes.fromhex(key), bytes.fromhex(data)
    assert [x.hex() for x in kdf3(k, d)] == [t0, t1, t2]
    assert [x.hex() for x in kdf2(k, d)] == [t0, t1]
    assert kdf1(k, d).hex() == t0


# RejectAfterMessages as replay_test.go defines it for this test
LIMIT = (1 << 64) - (1 << 4) - 1
T_LIM = WINDOW_SIZE + 1


def test_window_size_is_8128() -> None:
    assert WINDOW_SIZE == 8128


def test_replay_sequence() -> None:
    w = ReplayWindow()
    steps = [
        (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
        (T_LIM, True), (T_LIM - 1, True), (T_LIM - 1, False), (T_LIM - 2, True), (2, True),
        (2, False), (T_LIM + 16, True), (3, False), (T_LIM + 16, False), (T_LIM * 4, True),
        (T_LIM * 4 - (T_LIM - 1), True), (10, False), (T_LIM * 4 - T_LIM, False),
        (T_LIM * 4 - (T_LIM + 1), False), (T_LIM * 4 - (T_LIM - 2), True),
        (T_LIM * 4 + 1 - T_LIM, False), (0, False), (LIMIT, False), (LIMIT - 1, True),
        (LIMIT, False), (LIMIT - 1, False), (LIMIT - 2, True), (LIMIT + 1, False),
        (LIMIT + 2, False), (LIMIT - 2, False), (LIMIT - 3, True), (0, False),
    ]  # fmt: skip
    for number, (counter, expected) in enumerate(steps, 1):
        assert w.accept(counter, LIMIT) is expected, f"step {number}: counter {counter}"


def _bulk(counters: list[int], then: list[tuple[int, bool]]) -> None:
    w = ReplayWindow()
    for c in counters:
        assert w.accept(c, LIMIT), c
    for c, expected in then:
        assert w.accept(c, LIMIT) is expected, c


def test_replay_bulk() -> None:
    _bulk(list(range(1, WINDOW_SIZE + 1)), [(0, True), (0, False)])
    _bulk(list(range(2, WINDOW_SIZE + 2)), [(1, True), (0, False)])
    _bulk(list(range(WINDOW_SIZE + 1, 0, -1)), [])
    _bulk(list(range(WINDOW_SIZE + 2, 1, -1)), [(0, False)])
    _bulk(list(range(WINDOW_SIZE, 0, -1)), [(WINDOW_SIZE + 1, True), (0, False)])
    _bulk(list(range(WINDOW_SIZE, 0, -1)), [(0, True), (WINDOW_SIZE + 1, True)])


START = 0.123456789  # a nontrivial bit pattern, as in tai64n_test.go


@pytest.mark.parametrize(
    ("delta", "after"),
    [(10e-9, False), (10e-6, False), (1e-3, False), (10e-3, False), (20e-3, True)],
)
def test_tai64n_whitened_ordering(delta: float, after: bool) -> None:
    assert is_after(stamp(START + delta), stamp(START)) is after


def test_tai64n_layout() -> None:
    ts = stamp(1_700_000_000.5)
    assert len(ts) == 12
    assert int.from_bytes(ts[:8], "big") == (1 << 62) + 10 + 1_700_000_000
    nanos = int.from_bytes(ts[8:], "big")
    assert nanos % (1 << 24) == 0 and 0.5e9 - (1 << 24) < nanos <= 0.5e9
    assert is_after(stamp(1_700_000_001.0), ts)
