"""The GPU kernels a CUDA build carries, and which GPUs they run on.

kernel_archs reads them from a library's fatbinaries, with no GPU and no driver; serving_arch
is what the host tools (an image's promised archs against the host's GPUs) and the backend (the
build's arch list against the visible GPUs) both judge a GPU by.
"""

from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path

# A fatbinary (the kernels nvcc compiled, in a library's .nv_fatbin section) starts so.
FATBIN_MAGIC = 0xBA55ED50


def arch_list() -> list[str]:
    """The GPU architectures this torch build carries kernels for (empty for a CPU build).

    torch.cuda.get_arch_list() answers [] when no GPU is visible, so read the build flags.
    """
    import torch

    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
    return flags.split() if flags else []


def serving_arch(capability: tuple[int, int], arches: list[str]) -> str | None:
    """The entry of the arch list whose code runs on a GPU of this capability, if any.

    A cubin for sm_XY runs on sm_XZ for Z >= Y (same major); PTX (compute_XY) is
    compiled on the fly for any GPU of capability XY or newer.
    """
    major, minor = capability
    for arch in arches:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not match:
            continue
        kind, arch_major, arch_minor, suffix = match[1], int(match[2]), int(match[3]), match[4]
        if kind == "sm" and suffix and (arch_major, arch_minor) != (major, minor):
            continue  # sm_90a code runs on sm_90 only
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return arch
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return arch
    return None


def kernel_archs(library: Path) -> list[str]:
    """What a CUDA library really carries, read from its fatbinary headers: sm_XY for each
    compiled kernel image, compute_XY for PTX. Needs no GPU and no driver, unlike
    torch.cuda.get_arch_list(), and unlike the build flags it reads the kernels themselves."""
    found: set[str] = set()
    with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for name, start, size in _elf_sections(data):
            if name == ".nv_fatbin":
                found |= _fatbin_archs(data, start, start + size)
    return sorted(found, key=lambda arch: (int(arch.split("_")[1]), arch))


def _elf_sections(data: mmap.mmap) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each section of a 64-bit little-endian ELF file."""
    (table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, table + i * entry_size) for i in range(count)]
    names = headers[names_index][4]
    sections = []
    for name, _, _, _, offset, size in headers:
        end = data.find(b"\0", names + name)
        sections.append((data[names + name : end].decode(), offset, size))
    return sections


def _fatbin_archs(data: mmap.mmap, position: int, end: int) -> set[str]:
    """The architectures of every entry of the fatbinaries between position and end: each
    fatbinary is a header (magic, version, header size, body size) and entries (kind: 1 PTX,
    2 ELF; header size; body size; the architecture at byte 28)."""
    found = set()
    while position + 16 <= end:
        magic, _, header_size, body_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:
            position += 8  # fatbinaries are 8-byte aligned within the section
            continue
        entry, stop = position + header_size, position + header_size + body_size
        while entry < stop:
            kind, _, entry_header, entry_body = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            found.add(f"{'sm' if kind == 2 else 'compute'}_{arch}")
            if entry_header == 0:
                break
            entry += entry_header + entry_body
        position = stop
    return found
