"""A tcpdump-syntax filter compiled by libpcap and attached to a capture socket, through ctypes.

libpcap is called directly (pcap_open_dead, pcap_compile) rather than through scapy: scapy's
compiler path imports most of scapy, about 20 MiB of the daemon's memory for one function. Loading
libpcap itself costs about 1 MiB. The classic BPF program is copied into a `sock_fprog` and handed
to the kernel with SO_ATTACH_FILTER, which copies it, so nothing of it needs to live on after.
"""

from __future__ import annotations

import ctypes
import functools
import socket
import threading
from typing import Final

from agent.system.libraries import library_names

__all__ = ["FilterError", "attach_filter", "libpcap_present"]

SO_ATTACH_FILTER: Final = 26  # asm-generic/socket.h
_PCAP_NETMASK_UNKNOWN: Final = 0xFFFFFFFF
_lock = threading.Lock()  # pcap_compile is not thread-safe in older libpcap releases


class FilterError(ValueError):
    """The filter cannot be compiled or attached (no libpcap, a syntax error, a kernel refusal)."""


class _BpfInsn(ctypes.Structure):  # struct bpf_insn (pcap/bpf.h), struct sock_filter (linux/filter.h)
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _BpfProgram(ctypes.Structure):  # struct bpf_program
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


class _SockFprog(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_BpfInsn))]


@functools.cache
def _libpcap() -> ctypes.CDLL | None:
    """libpcap, loaded once (find_library runs ldconfig: never on every status call)."""
    for name in library_names(("libpcap.so.1", "libpcap.so.0.8"), "pcap"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def libpcap_present() -> bool:
    return _libpcap() is not None


def compile_filter(expression: str, linktype: int, snaplen: int = 65535) -> list[tuple[int, int, int, int]]:
    """The classic BPF program for `expression`: (code, jt, jf, k) per instruction."""
    lib = _libpcap()
    if lib is None:
        raise FilterError("libpcap is not installed")
    with _lock:
        handle = lib.pcap_open_dead(linktype, snaplen)
        if not handle:
            raise FilterError("pcap_open_dead failed")
        try:
            program = _BpfProgram()
            if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, _PCAP_NETMASK_UNKNOWN):
                raise FilterError(f"bad filter: {lib.pcap_geterr(handle).decode(errors='replace')}")
            try:
                return [(i.code, i.jt, i.jf, i.k) for i in program.bf_insns[: program.bf_len]]
            finally:
                lib.pcap_freecode(ctypes.byref(program))
        finally:
            lib.pcap_close(handle)


def attach_filter(sock: socket.socket, expression: str, linktype: int) -> int:
    """Compile `expression` and attach it to `sock` (replacing any filter); its instruction count."""
    program = compile_filter(expression, linktype)
    insns = (_BpfInsn * len(program))(*(_BpfInsn(*i) for i in program))
    fprog = _SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(_BpfInsn)))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    except OSError as exc:
        raise FilterError(f"the kernel refused the filter: {exc}") from None
    return len(program)
