"""Decode compressed DICOM pixel data in worker processes, so a native decoder's crash or hang costs one file.

GDCM, CharLS and OpenJPEG are C/C++ libraries: on corrupt data some of them abort the process
(`terminate called after throwing an instance of 'gdcm::Exception'`), crash (SIGSEGV) or loop. Native
(uncompressed) pixel data is decoded in this process by pydicom's numpy code; every encapsulated transfer syntax
(JPEG, JPEG-LS, JPEG 2000, RLE, ...) goes to a worker process started with `spawn`. A worker that dies or
overruns its time is replaced and the file gets a `PixelReadError` naming the reason; the app goes on.

Requests and replies travel as JSON headers and raw bytes over a pipe (no pickles).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import threading
import warnings
from pathlib import Path

import numpy as np

DECODE_TIMEOUT_SECONDS = 15.0  # one frame; the largest real frames decode in well under a second
WORKER_MEMORY_BYTES = 4 * 1024**3  # address-space cap of a worker: corrupt data can make a decoder allocate without end
MAX_WORKERS = 2


class DecodeFailed(RuntimeError):
    """The worker could not decode the frame; the message says why."""


def _worker_main(connection, memory_bytes: int) -> None:
    """Serve decode requests (JSON: path, frame) until the pipe closes; runs in the worker process."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # native decoders print to stderr; their complaints reach the caller as the error text
    _limit_memory(memory_bytes)
    from pydicom.pixels import pixel_array

    while True:
        try:
            request = json.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                array = np.ascontiguousarray(pixel_array(request["path"], index=request["frame"]))
            except Exception as exc:  # noqa: BLE001 - every decoder error becomes the file's reason
                connection.send_bytes(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                continue
        header = {"dtype": array.dtype.str, "shape": list(array.shape), "warnings": [str(w.message) for w in caught][:5]}
        connection.send_bytes(json.dumps(header).encode())
        connection.send_bytes(memoryview(array).cast("B"))


def _limit_memory(memory_bytes: int) -> None:
    """Cap this process's address space where the platform allows it (POSIX)."""
    try:
        import resource
    except ImportError:  # Windows: the time limit still applies
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass


class DecoderProcess:
    """One worker process and its pipe; `decode` is called by one thread at a time."""

    def __init__(self, memory_bytes: int = WORKER_MEMORY_BYTES) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child, memory_bytes), daemon=True,
                                       name="convnest-decoder")
        self.process.start()
        child.close()

    def decode(self, path: Path, frame: int | None, timeout: float) -> tuple[np.ndarray, list[str]]:
        """Return one frame's stored values and the decoder's warnings; DecodeFailed if it fails, dies or hangs."""
        try:
            self.connection.send_bytes(json.dumps({"path": str(path), "frame": frame}).encode())
            if not self.connection.poll(timeout):
                self.close()
                raise DecodeFailed(f"decoding took longer than {timeout:.0f} s; stopped")
            header = json.loads(self.connection.recv_bytes())
            if "error" in header:
                raise DecodeFailed(header["error"])
            if not self.connection.poll(timeout):
                self.close()
                raise DecodeFailed(f"decoding took longer than {timeout:.0f} s; stopped")
            data = self.connection.recv_bytes()
        except (EOFError, OSError, BrokenPipeError):
            raise DecodeFailed(f"the decoder crashed on this file's compressed pixel data ({self._exit_reason()})") from None
        array = np.frombuffer(data, dtype=np.dtype(header["dtype"])).reshape(header["shape"])
        return array, header["warnings"]

    @property
    def alive(self) -> bool:
        """Return whether the worker process is still running."""
        return self.process.is_alive() and not self.connection.closed

    def close(self) -> None:
        """Stop the worker process."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()

    def _exit_reason(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is None:
            return "no reply"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


class DecoderPool:
    """Up to MAX_WORKERS worker processes, started on first use and replaced when one dies."""

    def __init__(self, max_workers: int = MAX_WORKERS, timeout: float = DECODE_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._idle: queue.LifoQueue[DecoderProcess | None] = queue.LifoQueue()
        for _ in range(max_workers):
            self._idle.put(None)  # a slot; the process starts when a thread takes it

    def decode(self, path: Path, frame: int | None) -> tuple[np.ndarray, list[str]]:
        """Decode one frame in a worker (blocking until a worker is free)."""
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive:
                worker = DecoderProcess()
            try:
                return worker.decode(path, frame, self.timeout)
            finally:
                if not worker.alive:
                    worker.close()
                    worker = None
        finally:
            self._idle.put(worker)

    def shutdown(self) -> None:
        """Stop the idle workers (busy ones finish their frame); later calls start new ones."""
        drained = []
        while True:
            try:
                drained.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in drained:
            if worker is not None:
                worker.close()
            self._idle.put(None)


_POOL: DecoderPool | None = None
_POOL_LOCK = threading.Lock()


def decoder_pool() -> DecoderPool:
    """Return the process-wide decoder pool."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = DecoderPool()
        return _POOL
