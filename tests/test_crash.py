"""Crash and restart: `meshnode up` killed with SIGKILL (after bring-up,
during bring-up, during a reload) leaves policy rules, iptables rules,
sysctls and socket files behind; the next `meshnode up` finds them in the
crash journal (and by the iptables rules' meshnode tag) and removes them
before it comes up, and after its own clean stop nothing is left."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import WG_SOCKET_DIR, Lab, Namespace, require_netns, wait_for
from nodelab import MESHNODE, Node, firewall_rules, links, make_node, new_key, routes, rules
from wgpair import MESHNODE_WG

from meshnode.node import journal
from meshnode.node.statefiles import write_atomic

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.src_valid_mark",
)


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_netns()
    with Lab() as created:
        yield created


def snapshot(ns: Namespace, ifname: str) -> dict[str, object]:
    """Everything a node may add to its namespace (and to the shared socket directory)."""
    return {
        "rules4": rules(ns, 4),
        "rules6": rules(ns, 6),
        "firewall": firewall_rules(ns),
        "sysctls": {name: ns.run("sysctl", "-n", name).stdout.strip() for name in SYSCTLS},
        "links": links(ns),
        "routes": [r for r in routes(ns, 4) + routes(ns, 6) if ifname in r],
        "uapi_socket": (WG_SOCKET_DIR / f"{ifname}.sock").exists(),
    }


def gateway_node(lab: Lab) -> tuple[Node, Namespace, str]:
    """One node with one interface: a full-tunnel peer (policy routing and
    wg-quick's raw/mangle rules) and gateway mode (sysctls, FORWARD and
    MASQUERADE rules): everything bring-up can add."""
    ns, uplink_ns = lab.namespace("n"), lab.namespace("u")
    uplink = lab.veth(ns, uplink_ns, ["192.168.70.1/24", "fd70::1/64"],
                      ["192.168.70.2/24", "fd70::2/64"])  # fmt: skip
    ifname = lab.ifname("k")
    private, _ = new_key()
    _, peer_public = new_key()
    node = make_node(lab, ns, "node.toml", f"""
[[interface]]
name = "{ifname}"
private_key = "{private}"
listen_port = 51820
address = ["10.70.0.1/24", "fd71::1/64"]

[interface.gateway]
out_interface = "{uplink.a_ifname}"

[[interface.peer]]
public_key = "{peer_public}"
endpoint = "192.168.70.2:51820"
allowed_ips = ["0.0.0.0/0", "::/0"]
""")
    return node, ns, ifname


def wait_up(node: Node, ifname: str) -> None:
    """As Node.start, for a node already started."""

    def ready() -> bool:
        assert node.process is not None
        if not node.process.running():
            raise AssertionError(f"meshnode up exited early:\n{node.process.log()}")
        status = node.status()
        return status is not None and ifname in status.get("interfaces", [])

    wait_for(ready, 20, f"interface {ifname} of the node")


def kill9(node: Node) -> None:
    assert node.process is not None
    node.process.popen.send_signal(signal.SIGKILL)
    node.process.popen.wait(10)


def journal_files(node: Node) -> list[Path]:
    return sorted((node.run_dir / "journal").glob("*.json"))


def assert_clean(node: Node, ns: Namespace, ifname: str, before: dict[str, object]) -> None:
    after = snapshot(ns, ifname)
    for key in before:
        assert after[key] == before[key], f"{key} left behind:\n{after[key]}\n{node.log()}"
    assert not list((node.run_dir / "journal").iterdir()), node.log()
    assert not (node.run_dir / "control.sock").exists()


def test_kill_9_after_bring_up_is_cleaned_up_by_the_next_start(lab: Lab) -> None:
    node, ns, ifname = gateway_node(lab)
    before = snapshot(ns, ifname)
    node.start(ifname)
    up = snapshot(ns, ifname)
    added_rules = len(up["rules4"]) - len(before["rules4"])  # type: ignore[arg-type]
    assert added_rules == 2 and len(up["firewall"]) > len(before["firewall"])  # type: ignore[arg-type]
    assert up["sysctls"] != before["sysctls"]
    entries = json.loads(journal_files(node)[0].read_text())["entries"]
    assert {entry["kind"] for entry in entries} >= {"link", "socket", "rule", "iptables",
                                                    "sysctl", "route"}  # fmt: skip
    assert oct(journal_files(node)[0].stat().st_mode & 0o777) == "0o600"

    kill9(node)
    # what the killed node leaves: the TUN goes with it, the rest stays
    left = snapshot(ns, ifname)
    assert ifname not in left["links"]
    assert left["rules4"] == up["rules4"] and left["firewall"] == up["firewall"]
    assert (node.run_dir / "control.sock").exists() and journal_files(node)

    node.start(ifname)
    again = snapshot(ns, ifname)
    # the same set, not a second one beside the first
    for key in ("rules4", "rules6", "firewall", "sysctls"):
        assert sorted(again[key]) == sorted(up[key]), f"{key}:\n{again[key]}\n{node.log()}"  # type: ignore[type-var]
    assert "Cleaning up after interface" in node.log()
    assert node.terminate() == 0, node.log()
    assert_clean(node, ns, ifname, before)


def test_rules_tagged_by_meshnode_without_a_journal_are_swept(lab: Lab) -> None:
    """The second line of defence: a tagged rule no journal lists (a node of
    an older version, a lost journal) whose interface is gone."""
    node, ns, ifname = gateway_node(lab)
    before = snapshot(ns, ifname)
    stray = ["-o", "lo", "-j", "ACCEPT", "-m", "comment", "--comment", f"meshnode:{ifname}"]
    for tool in ("iptables", "ip6tables"):
        ns.run(tool, "-w", "5", "-A", "FORWARD", *stray)
    node.start(ifname)
    assert node.terminate() == 0, node.log()
    assert_clean(node, ns, ifname, before)


def test_kill_9_at_random_moments_of_bring_up_and_reload(lab: Lab) -> None:
    node, ns, ifname = gateway_node(lab)
    before = snapshot(ns, ifname)
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # how long bring-up takes here, from the journal's first write (the first
    # change) to up, to aim the kills inside it
    node.process = ns.spawn(*MESHNODE, "up", str(node.config), env=node.env)
    wait_for(lambda: journal_of(node), 20, "the crash journal")
    started = time.monotonic()
    wait_up(node, ifname)
    window = time.monotonic() - started
    kill9(node)
    text = node.config.read_text()
    left = []  # journal entries each kill left behind, to see where the kills fell
    for _ in range(3):
        node.process = ns.spawn(*MESHNODE, "up", str(node.config), env=node.env)
        wait_for(lambda: journal_of(node) or not node.process.running(), 20,
                 "the crash journal")  # fmt: skip
        time.sleep(rng.uniform(0, window))
        kill9(node)
        left.append(entries_left(node))
    for attempt in range(2):
        node.config.write_text(text)
        node.start(ifname)
        # a changed address sets the interface up again: a full teardown and bring-up
        node.config.write_text(text.replace("10.70.0.1/24", f"10.70.{attempt + 1}.1/24"))
        assert node.process is not None
        node.process.popen.send_signal(signal.SIGHUP)
        time.sleep(rng.uniform(0, 2 * window))
        kill9(node)
        left.append(entries_left(node))
    print(f"seed {seed}: bring-up window {window:.2f} s, entries left by each kill: {left}")
    node.config.write_text(text)
    node.start(ifname)
    assert node.terminate() == 0, f"seed {seed}\n{node.log()}"
    assert_clean(node, ns, ifname, before)


def journal_of(node: Node) -> bool:
    """Whether the node's own process has written its journal (not the one
    a killed node left, which it removes first)."""
    assert node.process is not None
    for path in journal_files(node):
        try:
            if json.loads(path.read_text())["pid"] == node.process.pid:
                return True
        except (OSError, ValueError):
            pass
    return False


def entries_left(node: Node) -> int:
    return sum(len(json.loads(path.read_text())["entries"]) for path in journal_files(node))


def test_a_live_nodes_journal_is_not_touched_by_a_second_start(lab: Lab) -> None:
    node, ns, ifname = gateway_node(lab)
    before = snapshot(ns, ifname)
    node.start(ifname)
    up = snapshot(ns, ifname)
    (path,) = journal_files(node)
    contents = path.read_bytes()
    status, out = node.cli("up", str(node.config), check=False)
    assert status == 1 and "already running" in out, out
    assert path.read_bytes() == contents
    assert snapshot(ns, ifname) == up
    assert node.status() is not None
    assert node.terminate() == 0, node.log()
    assert_clean(node, ns, ifname, before)


def test_meshnode_wg_killed_leaves_only_its_socket_file_which_the_next_start_replaces(
    lab: Lab,
) -> None:
    ns = lab.namespace("w")
    ifname = lab.ifname("w")
    daemon = lab.start_userspace_wg(ns, ifname, argv=MESHNODE_WG)
    daemon.popen.send_signal(signal.SIGKILL)
    daemon.popen.wait(10)
    # the kernel takes the TUN away with the last descriptor of it
    wait_for(lambda: ifname not in links(ns), 5, f"{ifname} to go")
    assert (WG_SOCKET_DIR / f"{ifname}.sock").exists()
    daemon = lab.start_userspace_wg(ns, ifname, argv=MESHNODE_WG)
    daemon.stop(10)
    assert daemon.popen.returncode == 0, daemon.log()
    assert ifname not in links(ns) and not (WG_SOCKET_DIR / f"{ifname}.sock").exists()


# ---------------------------------------------------------------- without namespaces


def test_recover_skips_a_live_process_and_cleans_a_dead_ones(tmp_path: Path) -> None:
    socket_file = tmp_path / "stale.sock"
    socket_file.write_text("")  # nobody answers on it
    directory = journal.journal_dir(tmp_path)
    directory.mkdir()
    # "dead": this PID with a start time it never had (the PID was reused)
    for name, pid, start in (
        ("live", os.getpid(), journal.process_start_time(os.getpid())),
        ("dead", os.getpid(), "1"),
    ):
        data = {"version": 1, "interface": name, "pid": pid, "start_time": start,
                "netns": journal.netns_id(),
                "entries": [{"kind": "socket", "path": str(socket_file)}]}  # fmt: skip
        (directory / f"{name}.json").write_text(json.dumps(data))
    live = (directory / "live.json").read_bytes()
    assert journal.recover(tmp_path, log=lambda message: None) == ["dead"]
    assert (directory / "live.json").read_bytes() == live
    assert not (directory / "dead.json").exists() and not socket_file.exists()


def test_journal_entries_come_and_go_and_a_clean_close_leaves_no_file(tmp_path: Path) -> None:
    log = journal.Journal("wgtest0", tmp_path)
    log.open()
    forget = log.record({"kind": "rule", "version": 4, "words": ["table", "main"]})
    data = json.loads(log.path.read_text())
    assert data["pid"] == os.getpid() and len(data["entries"]) == 1
    assert log.path.stat().st_mode & 0o777 == 0o600
    forget()
    assert json.loads(log.path.read_text())["entries"] == []
    assert log.close() and not log.path.exists()


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    log = journal.Journal("wgtest0", tmp_path / "file" / "below")
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(journal.JournalError, match=re.escape(str(tmp_path / "file"))):
        log.open()


# ---------------------------------------------------------------- full or read-only directories


@pytest.fixture
def small_fs(lab: Lab) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted on every way out."""
    mount = lab.tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
                   check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_or_read_only_state_or_run_directory_is_a_clear_error(
    lab: Lab, small_fs: Path
) -> None:
    node, ns, ifname = gateway_node(lab)
    before = snapshot(ns, ifname)
    state = small_fs / "state"
    state.mkdir()
    previous = state / "kept"
    previous.write_bytes(b"previous state\n")
    fill(small_fs)
    env = {**node.env, "MESHNODE_STATE_DIR": str(state)}
    result = ns.run(*MESHNODE, "up", str(node.config), env=env, check=False)
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 1 and f"{state}/" in out and "No space left" in out, out
    assert previous.read_bytes() == b"previous state\n"
    # state files and SaveConfig go through write_atomic: old file or new, never half
    with pytest.raises(OSError):
        write_atomic(previous, b"new state\n" * 10000)
    assert previous.read_bytes() == b"previous state\n"
    assert sorted(p.name for p in state.iterdir()) == ["kept"]
    # the run directory full: the crash journal cannot be written, so nothing
    # is changed (the interface does not come up)
    env = {**node.env, "MESHNODE_RUN_DIR": str(small_fs / "run")}
    (small_fs / "run" / "journal").mkdir(parents=True)
    result = ns.run(*MESHNODE, "up", str(node.config), env=env, check=False)
    out = (result.stdout + result.stderr).decode()
    journal_path = small_fs / "run" / "journal" / f"{ifname}.json"
    assert result.returncode == 1 and f"{journal_path}: No space left" in out, out
    assert snapshot(ns, ifname) == before
    # read-only
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    env = {**node.env, "MESHNODE_STATE_DIR": str(small_fs / "new-state")}
    result = ns.run(*MESHNODE, "up", str(node.config), env=env, check=False)
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 1 and f"{small_fs}/new-state" in out, out
    assert "Read-only file system" in out, out
