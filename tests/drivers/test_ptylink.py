"""PtyLink: a raw pty pair standing in for a serial line, with unplug / replug."""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.base import TransportError
from drivers.ptylink import PtyLink

# Bytes a cooked terminal would mangle: CR/LF translation, XON/XOFF, ^C, ^D, DEL, 8-bit.
AWKWARD = bytes([0x0D, 0x0A, 0x11, 0x13, 0x03, 0x04, 0x7F, 0x10, 0xFA, 0xFF, 0x00])


def read_exactly(fd: int, n: int, timeout_s: float = 2.0) -> bytes:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while len(data) < n:
        if not poller.poll(int(timeout_s * 1000)):
            break
        data += os.read(fd, n - len(data))
    return data


def nothing_to_read(fd: int, wait_s: float = 0.05) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return not poller.poll(int(wait_s * 1000))


def open_port(path: str | Path) -> int:
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


@pytest.fixture
def link_path(tmp_path: Path) -> Path:
    return tmp_path / "dev" / "ttyDART"


@pytest.fixture
def pty(link_path: Path) -> Iterator[PtyLink]:
    link_path.parent.mkdir()
    with PtyLink(link_path) as pty:
        yield pty


def test_bytes_pass_unchanged_both_ways_without_echo(pty: PtyLink) -> None:
    port = open_port(pty.slave_name)
    try:
        os.write(port, AWKWARD)
        assert read_exactly(pty.master_fd, len(AWKWARD)) == AWKWARD
        assert nothing_to_read(port), "the daemon's own bytes were echoed back"
        os.write(pty.master_fd, AWKWARD)
        assert read_exactly(port, len(AWKWARD)) == AWKWARD
        assert nothing_to_read(pty.master_fd)
    finally:
        os.close(port)


def test_symlink_points_at_the_slave(pty: PtyLink, link_path: Path) -> None:
    assert pty.link == link_path
    assert os.readlink(link_path) == pty.slave_name
    port = open_port(link_path)
    try:
        os.write(pty.master_fd, b"\x50\x70\xfa")
        assert read_exactly(port, 3) == b"\x50\x70\xfa"
    finally:
        os.close(port)


def test_an_existing_symlink_is_replaced(tmp_path: Path) -> None:
    link = tmp_path / "ttyDART"
    link.symlink_to("/dev/null")
    with PtyLink(link) as pty:
        assert os.readlink(link) == pty.slave_name
    assert not link.exists() and not link.is_symlink()


def test_no_link_is_fine(tmp_path: Path) -> None:
    with PtyLink() as pty:
        assert pty.link is None
        assert pty.slave_name.startswith("/dev/")
    assert list(tmp_path.iterdir()) == []


def test_daemon_closing_and_reopening_the_port_does_not_break_the_master(pty: PtyLink) -> None:
    port = open_port(pty.slave_name)
    os.close(port)
    # The link's own slave keeps the master alive: no hang-up, no EIO.
    poller = select.poll()
    poller.register(pty.master_fd, select.POLLIN | select.POLLHUP)
    assert poller.poll(50) == []
    port = open_port(pty.link or pty.slave_name)
    try:
        os.write(port, b"\x51\x20\xfa")
        assert read_exactly(pty.master_fd, 3) == b"\x51\x20\xfa"
    finally:
        os.close(port)


def test_unplug_hangs_the_daemon_up_and_removes_the_path(pty: PtyLink, link_path: Path) -> None:
    port = open_port(link_path)
    try:
        pty.unplug()
        assert not link_path.is_symlink()
        assert not pty.is_open
        with pytest.raises(TransportError):
            _ = pty.master_fd
        # Like a pulled USB adapter: reads end (EOF or EIO), writes fail.
        try:
            assert os.read(port, 16) == b""
        except OSError as exc:
            assert exc.errno == errno.EIO
        with pytest.raises(OSError) as failed:
            os.write(port, b"\x50\x20\xfa")
        assert failed.value.errno == errno.EIO
        with pytest.raises(FileNotFoundError):
            open_port(link_path)
    finally:
        os.close(port)


def test_replug_gives_a_working_line_at_the_same_path(pty: PtyLink, link_path: Path) -> None:
    pty.unplug()
    pty.replug()
    assert os.readlink(link_path) == pty.slave_name
    port = open_port(link_path)
    try:
        os.write(port, b"\x52\x20\xfa")
        assert read_exactly(pty.master_fd, 3) == b"\x52\x20\xfa"
    finally:
        os.close(port)


def test_replug_while_plugged_moves_the_link_to_a_new_pty(pty: PtyLink, link_path: Path) -> None:
    old = open_port(link_path)
    try:
        pty.replug()
        assert os.readlink(link_path) == pty.slave_name
        with pytest.raises(OSError):
            os.write(old, b"x")
    finally:
        os.close(old)


def test_close_leaves_a_link_that_someone_else_took_over(pty: PtyLink, link_path: Path) -> None:
    os.replace(_symlink_beside(link_path, "/dev/null"), link_path)
    pty.close()
    assert os.readlink(link_path) == "/dev/null"


def test_open_twice_is_refused(pty: PtyLink) -> None:
    with pytest.raises(TransportError):
        pty.open()


def _symlink_beside(path: Path, target: str) -> Path:
    other = path.with_name("other")
    other.symlink_to(target)
    return other
