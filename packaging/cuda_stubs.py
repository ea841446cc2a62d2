"""CPU-only bundles from the CUDA build of torch: leave NVIDIA's libraries out, stub the few torch links to.

torch 2.x from PyPI (Linux x86-64) is a CUDA build. Its shared libraries name the CUDA libraries as DT_NEEDED
entries, so the dynamic loader refuses to load torch when they are missing, long before any Python code could
intervene:

    libtorch_global_deps.so -> libcudart           (torch/__init__.py `_load_global_deps`; on failure it
                                                    looks for the nvidia-* wheels and raises ValueError)
    libtorch_cpu.so         -> libcudart, libcupti
    libtorch.so             -> libtorch_cuda.so    (always: torch._C -> libtorch_python -> libtorch)
    libtorch_cuda.so        -> libcublas, libcublasLt, libcufft, libcusparse, libcusparseLt, libcurand,
                               libnccl, libcudnn, libnvrtc, libcufile, libcudart, libtorch_nvshmem
    libtorch_nvshmem.so     -> libnvshmem_host
    libtorch_python.so      -> libcudnn, libnccl, libcufile, libcudart

so "exclude nvidia-*" alone gives a bundle whose torch does not import. The "cpu" variant therefore:

* keeps the small real libraries (cudart, cupti, cufile: about 8 MB; with cudart, torch.cuda reports no GPU
  the normal way),
* replaces the ones torch links but never calls on the CPU (cuBLAS/cuBLASLt, cuFFT, cuSPARSE, cuSPARSELt,
  cuRAND, NCCL, NVRTC, NVSHMEM: about 1.8 GB, and the cuDNN loader, which aborts without its engine
  libraries anyway) by stubs: shared objects with the same SONAME, symbol version and exported symbols, each
  function printing which stub was called and aborting (e.g. an explicit torch.backends.cudnn.version()),
* drops everything torch only dlopen()s on a GPU (cuDNN's engine libraries, cuSOLVER with
  libtorch_cuda_linalg, nvJitLink, NVRTC builtins, libcaffe2_nvrtc, NVSHMEM transports, triton),
* and the runtime hook (rthooks/pyi_rth_convnest.py) sets CUDA_VISIBLE_DEVICES="" so that
  torch.cuda.is_available() is False even with an NVIDIA driver present: torch raises its own "no CUDA
  device" error at lazy CUDA initialisation, before any stub could be reached.

A torch CPU wheel (https://download.pytorch.org/whl/cpu) needs none of this: with it the spec finds no CUDA
libraries and strip_cuda() changes nothing. Stubs need a C compiler (gcc/cc) and readelf at build time.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import subprocess
from pathlib import Path

# Real, small, and linked by torch's core libraries: kept.
KEEP_REAL = re.compile(r"^(libcudart\.so\.\d+|libcupti\.so\.\d+|libcufile\.so\.\d+)$")
# Linked (DT_NEEDED) by libtorch_cuda / libtorch_nvshmem / libtorch_python, large, unused on the CPU: stubbed.
STUB = re.compile(r"^(libcublas\.so\.\d+|libcublasLt\.so\.\d+|libcufft\.so\.\d+|libcusparse\.so\.\d+|"
                  r"libcusparseLt\.so\.\d+|libcurand\.so\.\d+|libnccl\.so\.\d+|libnvrtc\.so\.\d+|"
                  r"libnvshmem_host\.so\.\d+|libcudnn\.so\.\d+)$")
# CUDA-only libraries (dlopen()ed on a GPU, or not used by torch at all): dropped, wherever they are. Everything
# under nvidia/ and triton/ that is neither kept nor stubbed is dropped as well.
CUDA_DROP = re.compile(r"^(libcudnn_\w+|libcusolver\w*|libnvJitLink|libnvrtc-builtins[\w.]*|libnvrtc\.alt|"
                       r"libnvperf_\w+|libnvToolsExt|libnvtx3interop|libcufftw|libnvblas|libcheckpoint|"
                       r"libpcsamplingutil|libcufile_rdma|libnvshmem_device|nvshmem_\w+)\.so")
TORCH_GPU_ONLY = {"libtorch_cuda_linalg.so", "libcaffe2_nvrtc.so"}  # dlopen()ed by torch only on a GPU


def _parts(dest: str) -> list[str]:
    return posixpath.normpath(dest.replace("\\", "/")).split("/")


def classify(dest: str) -> str:
    """Return 'keep', 'stub' or 'drop' for a bundle path (a TOC entry's destination name)."""
    parts = _parts(dest)
    name = parts[-1]
    if parts[0] == "torch" and name in TORCH_GPU_ONLY:
        return "drop"
    if KEEP_REAL.match(name):
        return "keep"
    if STUB.match(name):
        return "stub"
    if parts[0] in ("nvidia", "triton") or CUDA_DROP.match(name):
        return "drop"
    return "keep"


def _readelf(args: list[str], lib: Path) -> str:
    return subprocess.run(["readelf", *args, str(lib)], check=True, capture_output=True, text=True).stdout


def _soname(lib: Path) -> str:
    match = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", _readelf(["-d", "-W"], lib))
    return match.group(1) if match else lib.name


def _version_nodes(lib: Path) -> list[str]:
    text = _readelf(["-V", "-W"], lib)
    section = text.split("Version definition section", 1)
    if len(section) < 2:
        return []
    section = section[1].split("Version needs section", 1)[0]
    return [m.group(1) for m in re.finditer(r"Flags: (?!BASE)[^\n]*?Name: (\S+)", section)]


def _exported_symbols(lib: Path) -> list[tuple[str, str, int]]:
    """Return (name, 'FUNC'|'OBJECT', size) of every symbol the library defines in its dynamic table."""
    symbols: dict[str, tuple[str, str, int]] = {}
    for line in _readelf(["--dyn-syms", "-W"], lib).splitlines():
        fields = line.split()
        if len(fields) < 8 or not fields[0].rstrip(":").isdigit():
            continue
        _, _, size, kind, bind, _, ndx, name = fields[:8]
        if ndx in ("UND", "ABS") or bind not in ("GLOBAL", "WEAK", "UNIQUE") or kind not in ("FUNC", "OBJECT", "IFUNC"):
            continue
        name = name.split("@", 1)[0]
        size_value = int(size, 16) if size.startswith("0x") else int(size)
        symbols[name] = (name, "OBJECT" if kind == "OBJECT" else "FUNC", size_value)
    return sorted(symbols.values())


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise SystemExit("cuda_stubs: the cpu variant needs a C compiler (cc/gcc/clang) to build CUDA stubs; "
                     "install one (Debian: apt-get install gcc) or build with a CPU wheel of torch")


def make_stub(real_lib: Path, out_dir: Path) -> Path:
    """Compile a stub of real_lib (same SONAME, version node and exported symbols) into out_dir."""
    if not shutil.which("readelf"):
        raise SystemExit("cuda_stubs: readelf (binutils) is needed to build CUDA stubs")
    soname = _soname(real_lib)
    nodes = _version_nodes(real_lib)
    symbols = _exported_symbols(real_lib)
    digest = hashlib.sha256(f"{real_lib.stat().st_size}:{real_lib.stat().st_mtime_ns}:{soname}:v1".encode()).hexdigest()[:16]
    work = out_dir / f"{real_lib.name}.{digest}"
    stub = work / real_lib.name
    if stub.is_file():
        return stub
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        "/* Generated by packaging/cuda_stubs.py: a stand-in for " + soname + " in a CPU-only bundle. */",
        "#include <stdio.h>",
        "#include <stdlib.h>",
        "static void convnest_stub_called(const char *name) {",
        f'  fprintf(stderr, "convnest-viewer (cpu build): %s from {soname} was called, but this build ships '
        'no CUDA libraries; use the full build for a GPU\\n", name);',
        "  abort();",
        "}",
    ]
    for index, (name, kind, size) in enumerate(symbols):
        label = name.replace('"', "")
        if kind == "OBJECT":
            lines.append(f'__attribute__((visibility("default"))) unsigned char convnest_o{index}[{max(size, 1)}] '
                         f'__asm__("{label}");')
        else:
            lines.append(f'__attribute__((visibility("default"))) void convnest_f{index}(void) __asm__("{label}");')
            lines.append(f'void convnest_f{index}(void) {{ convnest_stub_called("{label}"); }}')
    (work / "stub.c").write_text("\n".join(lines) + "\n")
    command = [_compiler(), "-shared", "-fPIC", "-O1", "-fvisibility=hidden", "-o", str(stub), str(work / "stub.c"),
               f"-Wl,-soname,{soname}"]
    if nodes:
        exported = "".join(f"    {name};\n" for name, _, _ in symbols)
        # every symbol in the library's (first) version node, as in the real library
        script = f"{nodes[0]} {{\n  global:\n{exported}  local: *;\n}};\n" + "".join(f"{node} {{}};\n" for node in nodes[1:])
        (work / "stub.map").write_text(script)
        command.append(f"-Wl,--version-script={work / 'stub.map'}")
    subprocess.run(command, check=True)
    return stub


def strip_cuda(binaries: list, datas: list, stub_dir: Path) -> tuple[list, list, list[str]]:
    """Filter PyInstaller TOCs for the cpu variant: keep/stub/drop every CUDA file (see classify).

    Return the new binaries and datas, and the bundle paths of the stubbed libraries (none with a CPU wheel).
    """
    stub_dir = Path(stub_dir)
    new_binaries, dropped, stubbed = [], [], []
    for entry in binaries:
        dest, src, typecode = entry[0], entry[1], entry[2]
        action = classify(dest)
        if typecode == "SYMLINK":  # src is the link's target, relative to the link's folder
            target = posixpath.join(posixpath.dirname(dest.replace("\\", "/")), str(src).replace("\\", "/"))
            if action == "drop" or classify(target) == "drop":
                dropped.append(dest)
            else:
                new_binaries.append(entry)
        elif action == "drop":
            dropped.append(dest)
        elif action == "stub":
            stubbed.append(dest)
            new_binaries.append((dest, str(make_stub(Path(src), stub_dir)), typecode))
        else:
            new_binaries.append(entry)
    new_datas = []
    for entry in datas:
        if classify(entry[0]) == "drop":
            dropped.append(entry[0])
        else:
            new_datas.append(entry)
    print(f"cuda_stubs: stubbed {len(stubbed)} CUDA libraries ({', '.join(sorted(_parts(d)[-1] for d in stubbed))}), "
          f"dropped {len(dropped)} files")
    return new_binaries, new_datas, stubbed
