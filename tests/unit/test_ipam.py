"""The flock'ed address pool: allocation, release, exhaustion, and 20 racing processes.

Facts are read from the pool directory itself: one file per lease, named by the address,
holding the owner's id.
"""
import ipaddress
import multiprocessing
import os

import pytest

from minibox.ipam import AddressError, AddressPool

SUBNET = "10.199.0.0/24"


@pytest.fixture
def pool(tmp_path):
    return AddressPool(tmp_path / "store", "minibox0")


def on_disk(pool):
    """{address: owner} as the files say."""
    return {path.name: path.read_text() for path in pool.directory.iterdir()
            if path.name != "subnet"}


def allocate(pool, owner, requested=None, subnet=SUBNET):
    with pool.locked(subnet_if_new=subnet) as table:
        return table.allocate(owner, requested)


def test_first_address_follows_the_gateway(pool):
    with pool.locked(subnet_if_new=SUBNET) as table:
        assert table.gateway == ipaddress.IPv4Address("10.199.0.1")
        assert table.allocate("a") == ipaddress.IPv4Address("10.199.0.2")
        assert table.allocate("b") == ipaddress.IPv4Address("10.199.0.3")
    assert (pool.directory / "subnet").read_text() == SUBNET
    assert on_disk(pool) == {"10.199.0.2": "a", "10.199.0.3": "b"}


def test_release_frees_the_address_for_the_next_container(pool):
    allocate(pool, "a")
    allocate(pool, "b")
    with pool.locked() as table:
        table.release("a")
        table.release("a")  # twice is harmless
    assert str(allocate(pool, "c")) == "10.199.0.2"
    assert on_disk(pool) == {"10.199.0.2": "c", "10.199.0.3": "b"}


def test_exhaustion(pool):
    # a /29 has 6 host addresses; the first is the gateway
    got = [str(allocate(pool, f"c{i}", subnet="10.199.0.0/29")) for i in range(5)]
    assert got == [f"10.199.0.{n}" for n in range(2, 7)]
    with pytest.raises(AddressError, match=r"no free address left in 10.199.0.0/29 \(5 leased\)"):
        allocate(pool, "one-too-many")
    assert len(on_disk(pool)) == 5


def test_requested_address(pool):
    assert str(allocate(pool, "a", "10.199.0.50")) == "10.199.0.50"
    assert str(allocate(pool, "b")) == "10.199.0.2"
    assert on_disk(pool) == {"10.199.0.50": "a", "10.199.0.2": "b"}


def test_an_owner_asking_again_for_its_address_keeps_it(pool):
    """A restarted container asks for the address it holds: same lease, no second one."""
    first = allocate(pool, "a")
    allocate(pool, "b")
    assert allocate(pool, "a", str(first)) == first
    assert on_disk(pool) == {"10.199.0.2": "a", "10.199.0.3": "b"}


@pytest.mark.parametrize("requested, complaint", [
    ("10.199.0.50", "already in use by container a"),
    ("10.199.0.1", "gateway"),
    ("10.199.0.0", "not a usable address"),
    ("10.199.0.255", "not a usable address"),
    ("10.200.0.5", "not a usable address in 10.199.0.0/24"),
])
def test_bad_requested_address(pool, requested, complaint):
    allocate(pool, "a", "10.199.0.50")
    with pytest.raises(AddressError, match=complaint):
        allocate(pool, "b", requested)
    assert on_disk(pool) == {"10.199.0.50": "a"}


def test_the_stored_subnet_wins_over_a_new_default(pool):
    allocate(pool, "a", subnet="10.199.0.0/24")
    with pool.locked(subnet_if_new="172.31.0.0/16") as table:
        assert str(table.subnet) == "10.199.0.0/24"


def test_missing_pool_without_a_subnet(pool):
    assert not pool.exists()
    with pytest.raises(FileNotFoundError):
        with pool.locked():
            pass


def test_reset_forgets_leases_and_takes_the_new_subnet(pool):
    allocate(pool, "a")
    with pool.locked() as table:
        table.reset("192.0.2.0/28")
    assert on_disk(pool) == {}
    assert str(allocate(pool, "b")) == "192.0.2.2"


def test_a_temporary_left_by_a_killed_writer_is_no_lease(pool):
    allocate(pool, "a")
    (pool.directory / "subnet.12345.tmp").write_text("half")  # shared.replace_file's name
    with pool.locked() as table:
        assert table.leases == {"10.199.0.2": "a"}


def test_discard_removes_the_pool(pool):
    allocate(pool, "a")
    with pool.locked() as table:
        table.discard()
    assert not pool.exists() and os.listdir(pool.store_dir) == []


def _allocate_in_child(store_dir, owner, barrier, results):
    barrier.wait()  # all 20 processes hit the lock at the same moment
    with AddressPool(store_dir, "minibox0").locked(subnet_if_new=SUBNET) as table:
        results.put((owner, str(table.allocate(owner))))


def test_twenty_parallel_processes_get_distinct_addresses(pool):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(20), context.Queue()
    children = [context.Process(target=_allocate_in_child,
                                args=(pool.store_dir, f"c{i}", barrier, results))
                for i in range(20)]
    for child in children:
        child.start()
    got = dict(results.get(timeout=30) for _ in children)
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert set(got.values()) == {f"10.199.0.{n}" for n in range(2, 22)}
    assert {owner: address for address, owner in on_disk(pool).items()} == got
