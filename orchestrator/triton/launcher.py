"""The embedded tritonserver: a private Triton home built from the nvidia-pytriton wheel.

The wheel ships a real ``tritonserver`` (2.51), its shared libraries, the Python backend and stubs
for several Pythons, but no ONNX Runtime backend. The recipe (measured, docs/triton.md):

- copy the binary into a private home; put ``libtriton_python.so``, ``triton_python_backend_utils.py``
  and the stub for the *running* Python together in ``<home>/backends/python/`` (pointing Triton at
  site-packages fails: stub not found);
- install the project's Python-based ONNX backend as ``<home>/backends/coserve_ort/model.py``;
- ``LD_LIBRARY_PATH=<libdir of this python>:<site-packages>/nvidia_pytriton.libs`` (without the
  latter the server exits 127; without the former the stub silently embeds another Python) and
  this interpreter's ``bin`` first on ``PATH`` (else the model process cannot import onnxruntime);
- ``--model-control-mode=explicit --disable-auto-complete-config`` (auto-complete makes a load
  ~10x slower and silently picks KIND_CPU), ``--strict-readiness=false`` (see ``command()``), all
  endpoints on loopback.

Every Python-backend stub of this server uses a /dev/shm region prefix unique to this launcher, so
``stop()`` can remove exactly the regions this server leaves behind (a killed stub never removes its
own) and nothing of another server's.

Fast release (the default; ``fast_release=False`` turns it off): the stock Python backend keeps an
unloaded model's process, and its memory, for ~1.1 s after the unload call (a ``sleep(1)`` in
``StubLauncher::UpdateHealth()``, docs/triton.md). The launcher compiles a few lines of C
(``fast_release/fast_release.c``) with the machine's C compiler into an ``LD_PRELOAD`` shim that
makes only that ``sleep`` return at once, so Triton ends the stub itself and the memory is back in
milliseconds. The binary is cached per source hash under ``$XDG_CACHE_HOME/coserve`` (or
``~/.cache/coserve``). Without a compiler the server runs stock and says so (``unload_mode``,
``fast_release_problem``): cost profiles record the mode, because ``unload_time_s`` depends on it.

Lifetime: the server dies with the process that started it, even when that process is killed with
SIGKILL (``PR_SET_PDEATHSIG``, set by a tiny exec wrapper: ``with_death_signal``; its model processes exit ~0.3 s after the server is
reaped). What such a death cannot clean up, the temporary home and /dev/shm regions, the next
``start()`` of any embedded server removes (``remove_stale``): a home whose owner (the launcher's
pid and start time, in ``owner``) is dead and that no living process runs from, and a region whose
prefix no living process names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from orchestrator.errors import ServerStartError
from orchestrator.triton import processes
from orchestrator.triton.model_config import PYTHON_ORT_BACKEND
from orchestrator.triton.processes import ModelProcess, ProcessMemory

#: the project's Python-based ONNX backend, installed into every home as backends/coserve_ort/model.py
BACKEND_MODEL_PY = Path(__file__).with_name("backend_ort") / "model.py"
#: the fast-release shim's source (see the module doc)
FAST_RELEASE_C = Path(__file__).with_name("fast_release") / "fast_release.c"
UNLOAD_MODE_STOCK = "stock"
UNLOAD_MODE_FAST = "fast-release"
SHM_PREFIX_BASE = "triton_python_backend_shm_region_"
#: every embedded server's stubs name their /dev/shm regions ``<SHM_PREFIX_BASE>coserve_<id>_...``
COSERVE_SHM_PREFIX = f"{SHM_PREFIX_BASE}coserve_"
#: temporary homes are ``<tempdir>/<HOME_PREFIX>...``; each holds an ``owner`` file
HOME_PREFIX = "coserve-triton-"
OWNER_FILE = "owner"
LOG_NAME = "tritonserver.log"
_PR_SET_PDEATHSIG = 1


def site_packages() -> Path:
    """The running interpreter's site-packages (where nvidia-pytriton is installed)."""
    return Path(sysconfig.get_paths()["purelib"])


def wheel_root() -> Path:
    """``<site-packages>/pytriton/tritonserver`` (found via the installed package, not a guess)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return site_packages() / "pytriton" / "tritonserver"


def python_libdir() -> str:
    """Directory holding libpython of the running interpreter (the stub must embed this one)."""
    return str(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks; a small race remains until bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coserve"


def build_fast_release() -> tuple[Path | None, str | None]:
    """The compiled fast-release shim (cached per source hash), or (None, why not)."""
    import hashlib

    try:
        source = FAST_RELEASE_C.read_bytes()
    except OSError as exc:
        return None, f"shim source missing ({exc})"
    target = _cache_dir() / f"libcoserve_fast_release-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if target.is_file():
        return target, None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc) on PATH to build the fast-release shim"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(FAST_RELEASE_C), "-ldl"],
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            return None, f"building the fast-release shim failed: {(done.stderr or done.stdout).strip()[:300]}"
        os.replace(partial, target)  # atomic: concurrent builders agree on one file
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"building the fast-release shim failed: {exc}"
    return target, None


#: run by a fresh ``python -I -S`` in front of tritonserver: ask the kernel to SIGKILL this
#: process when the thread that spawned it dies (kept across the exec), give up if that parent is
#: already gone, then exec the server in place (same pid). Why not ``preexec_fn``: a fork of a
#: process that runs gRPC (the factory API, tritonclient) runs gRPC's fork handlers in the child,
#: which crashed the restarted server at start-up (SIGSEGV/SIGABRT, "epoll_wait error: Bad file
#: descriptor"); without ``preexec_fn`` subprocess uses vfork, which runs no fork handlers.
_EXEC_WITH_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def with_death_signal(command: list[str]) -> list[str]:
    """``command`` run so that it dies with the thread that starts it (``_EXEC_WITH_PDEATHSIG``).

    The death signal is tied to the *thread* that spawns: start servers from a thread that lives
    as long as the server (the main thread in every coserve command, the event loop's for a
    restart)."""
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *command]


def _owner_stamp(pid: int) -> str:
    """``<pid> <start time in clock ticks>``: names one process even after its pid is reused."""
    return f"{pid} {processes.start_time(pid)}"


def _owner_alive(home: Path) -> bool:
    try:
        pid_text, start = (home / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    return processes.is_alive(pid) and str(processes.start_time(pid)) == start


def region_tag(region: str) -> str | None:
    """``coserve_<id>_`` of a region name ``triton_python_backend_shm_region_coserve_<id>_...``."""
    tag = region[len(SHM_PREFIX_BASE) :].split("_", 2)[:2]
    return f"{tag[0]}_{tag[1]}_" if len(tag) == 2 and region.startswith(COSERVE_SHM_PREFIX) else None


def remove_stale(tempdir: str | Path | None = None) -> list[str]:
    """Remove what embedded servers that died uncleanly left behind.

    - orphan model processes: a stub whose server died while holding their shared health mutex
      blocks on it for good (``EmbeddedTriton._end_orphan_stubs``); one whose region prefix no
      living *tritonserver* names is killed (no server can take that mutex any more);
    - temporary homes ``<tempdir>/coserve-triton-*`` whose launcher (the ``owner`` file) is gone
      and that no living process runs a program from;
    - /dev/shm regions ``triton_python_backend_shm_region_coserve_<id>_*`` that no living
      process names ``coserve_<id>_`` on its command line.
    Returns what was removed (paths, region names, "orphan stub PID").
    """
    tempdir = Path(tempdir or tempfile.gettempdir())
    removed: list[str] = []

    def server_lines() -> list[str]:
        return [" ".join(argv) for argv in processes.all_cmdlines() if os.path.basename(argv[0]) == "tritonserver"]

    servers = server_lines()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        parsed = processes.parse_stub_cmdline(processes.read_cmdline(int(entry)))
        tag = region_tag(parsed[2]) if parsed is not None else None
        if tag is not None and not any(tag in line for line in servers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                removed.append(f"orphan stub {entry}")
    if removed:
        time.sleep(0.05)  # let the killed stubs go before their homes and regions are judged
    cmdlines = processes.all_cmdlines()
    with contextlib.suppress(OSError):
        for home in tempdir.glob(f"{HOME_PREFIX}*"):
            if not home.is_dir() or _owner_alive(home):
                continue
            if not (home / OWNER_FILE).exists() and time.time() - home.stat().st_mtime < 60:
                continue  # just created by a launcher that has not written its owner file yet
            inside = f"{home}/"
            if any(argv and argv[0].startswith(inside) for argv in cmdlines):
                continue
            shutil.rmtree(home, ignore_errors=True)
            removed.append(str(home))
    try:
        regions = [n for n in os.listdir("/dev/shm") if n.startswith(COSERVE_SHM_PREFIX)]
    except OSError:
        regions = []
    joined = [" ".join(argv) for argv in cmdlines]
    for name in regions:
        tag = region_tag(name)
        if tag is None or any(tag in line for line in joined):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/dev/shm", name))
            removed.append(name)
    return removed


@dataclass(frozen=True)
class ExitReport:
    """How a server ended: ``died_before_stop`` (crashed or killed by someone else), its exit code
    (negative: killed by that signal, as ``subprocess`` reports it) and what ``stop()`` did."""

    died_before_stop: bool
    returncode: int | None
    how: str

    def describe(self) -> str:
        """One line for a user, e.g. "tritonserver died before the end (killed by SIGKILL)"."""
        code = self.returncode
        ended = f"exit code {code}"
        if code is not None and code < 0:
            try:
                ended = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                ended = f"killed by signal {-code}"
        if self.died_before_stop:
            return f"tritonserver had died before it was stopped ({ended})"
        return f"tritonserver {self.how} ({ended})"


class EmbeddedTriton:
    """A tritonserver process started and owned by this object.

    Usage::

        with EmbeddedTriton("model_repository") as server:
            adapter = TritonAdapter(server.grpc_url, process_probe=server.model_processes)

    Contract:
    - ``start()`` returns once the server answers ready on HTTP, or raises ``ServerStartError``
      (missing binary/backend files, the process exited, or no readiness within
      ``start_timeout_s``) with the tail of the server log. A failed start leaves nothing running.
    - ``stop()`` sends SIGTERM (Triton finishes in-flight requests and unloads models for up to
      ``drain_timeout_s``, then exits), kills the server at once if it is frozen (stopped) and
      otherwise if it is still alive after ``stop_timeout_s``, kills stubs that outlive it, and
      removes this server's /dev/shm regions. It returns how the server ended (``ExitReport``:
      did it die before ``stop()``, its exit code or signal). Idempotent. After it returns no
      process of this server is alive.
    - The server dies with the thread that started it, even on SIGKILL (see the module doc).
    - ``home`` is a fresh temporary directory (removed by ``stop()``) unless given; the log is
      ``<home>/tritonserver.log`` (kept when the home was given).
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        home: str | Path | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        binary: str | Path | None = None,
        start_timeout_s: float = 60.0,
        drain_timeout_s: float = 3.0,
        stop_timeout_s: float = 4.0,
        log_verbose: int = 0,
        extra_args: tuple[str, ...] = (),
        fast_release: bool = True,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self._given_home = Path(home).resolve() if home is not None else None
        self.home: Path | None = self._given_home
        self._requested_ports = (grpc_port, http_port, metrics_port)
        self.grpc_port = grpc_port or 0
        self.http_port = http_port or 0
        self.metrics_port = metrics_port or 0
        self.binary = Path(binary) if binary is not None else wheel_root() / "bin" / "tritonserver"
        self.start_timeout_s = start_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self.shm_prefix = f"{SHM_PREFIX_BASE}coserve_{uuid.uuid4().hex[:12]}_"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        self.exit_report: ExitReport | None = None
        self._log_file: object | None = None
        self.fast_release = fast_release
        #: how an unloaded expert's memory comes back (module doc); cost profiles record it
        self.unload_mode = UNLOAD_MODE_STOCK
        #: why fast release was asked for but is not in effect (None when it is, or was not asked)
        self.fast_release_problem: str | None = None
        self._preload: Path | None = None

    # -- properties ------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<grpc port>`` (what tritonclient's gRPC client takes)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        if self.home is None:
            raise RuntimeError("server home not assembled yet")
        return self.home / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- home ------------------------------------------------------------------------------
    def assemble_home(self) -> Path:
        """Create the private Triton home (binary, Python backend + stub, coserve_ort backend)."""
        root = wheel_root()
        stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / processes.STUB_NAME
        sources = {
            "tritonserver binary": self.binary,
            "Python backend library": root / "backends" / "python" / "libtriton_python.so",
            "Python backend utilities": root / "backends" / "python" / "triton_python_backend_utils.py",
            f"Python backend stub for Python {sys.version_info.major}.{sys.version_info.minor}": stub,
            "coserve_ort backend": BACKEND_MODEL_PY,
        }
        for what, path in sources.items():
            if not path.is_file():
                raise ServerStartError(
                    f"cannot start the embedded Triton: {what} not found at {path} "
                    "(is nvidia-pytriton==0.7.0 installed in this environment?)"
                )
        remove_stale()
        if self._given_home is not None and self._given_home.exists() and not self._given_home.is_dir():
            raise ServerStartError(f"cannot use {self._given_home} as the Triton home: it exists and is not a directory")
        try:
            home = self._given_home or Path(tempfile.mkdtemp(prefix=HOME_PREFIX))
            home.mkdir(parents=True, exist_ok=True)
            (home / OWNER_FILE).write_text(_owner_stamp(os.getpid()))
            (home / "bin").mkdir(parents=True, exist_ok=True)
            python_dir = home / "backends" / "python"
            ort_dir = home / "backends" / PYTHON_ORT_BACKEND
            python_dir.mkdir(parents=True, exist_ok=True)
            ort_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.binary, home / "bin" / "tritonserver")
            for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
                shutil.copy2(root / "backends" / "python" / name, python_dir / name)
            shutil.copy2(stub, python_dir / processes.STUB_NAME)
            shutil.copy2(BACKEND_MODEL_PY, ort_dir / "model.py")
            self._preload = None
            self.unload_mode = UNLOAD_MODE_STOCK
            if self.fast_release:
                shim, self.fast_release_problem = build_fast_release()
                if shim is not None:
                    (home / "lib").mkdir(exist_ok=True)
                    self._preload = home / "lib" / "libcoserve_fast_release.so"
                    shutil.copy2(shim, self._preload)
                    self.unload_mode = UNLOAD_MODE_FAST
        except OSError as exc:
            where = self._given_home or tempfile.gettempdir()
            raise ServerStartError(f"cannot assemble the Triton home in {where}: {exc.strerror or exc}") from None
        self.home = home
        return home

    def environment(self) -> dict[str, str]:
        """The environment the server (and the stubs it spawns) need."""
        env = dict(os.environ)
        libs = [python_libdir(), str(site_packages() / "nvidia_pytriton.libs")]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        # The stub embeds the Python found on PATH's libdir; this venv's bin first so that the model
        # process sees this venv's packages (onnxruntime, numpy<2).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if self._preload is not None:
            env["LD_PRELOAD"] = ":".join([str(self._preload), *filter(None, [env.get("LD_PRELOAD")])])
        return env

    def command(self) -> list[str]:
        assert self.home is not None
        return [
            str(self.home / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            "--disable-auto-complete-config",
            f"--backend-directory={self.home / 'backends'}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # Strict readiness (Triton's default) reports the whole server not ready as long as
            # one model's last load failed (measured on 2.51): one corrupt expert would make a
            # health check fail while every other expert serves. Model readiness is per model.
            "--strict-readiness=false",
            f"--log-verbose={self.log_verbose}",
            # On SIGTERM Triton finishes in-flight requests and waits for models to unload, up to
            # this many seconds. A model whose process crashed stays UNLOADING forever, so without
            # a bound stop() would always run into its kill timeout.
            f"--exit-timeout-secs={max(1, round(self.drain_timeout_s))}",
            *self.extra_args,
        ]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmbeddedTriton:
        """Assemble the home, start tritonserver and wait until it is ready (see class doc)."""
        if self.running():
            return self
        if not self.model_repository.is_dir():
            raise ServerStartError(f"cannot start the embedded Triton: model repository {self.model_repository} is not a directory")
        # A port picked free can be taken before tritonserver binds it: retry with fresh picks.
        attempts = 3 if None in self._requested_ports else 1
        for attempt in range(attempts):
            try:
                return self._start_once()
            except ServerStartError as exc:
                if attempt + 1 < attempts and "already in use" in str(exc):
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self) -> EmbeddedTriton:
        self._finish_start(self._spawn())
        return self

    def _spawn(self) -> float:
        """Assemble the home and start the process (in the calling thread: the death signal is
        tied to it, see ``with_death_signal``); returns when it began."""
        grpc, http, metrics = self._requested_ports
        # A port held by another process must fail here, by name: Triton would exit, but its HTTP
        # readiness probe could first be answered by whatever holds the port (another Triton).
        for flag, port in (("gRPC", grpc), ("HTTP", http), ("metrics", metrics)):
            if port is not None and port_in_use(port):
                raise ServerStartError(
                    f"cannot start the embedded Triton: {flag} port {port} on 127.0.0.1 is already in use "
                    "(another Triton? stop it or choose another port)"
                )
        self.assemble_home()
        self.grpc_port = grpc or free_port()
        self.http_port = http or free_port()
        self.metrics_port = metrics or free_port()
        self.exit_report = None
        began = time.perf_counter()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's lifetime
        self._log_file = log
        try:
            self.process = subprocess.Popen(
                with_death_signal(self.command()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                cwd=self.home,
                # Own session: a Ctrl-C in the terminal reaches us only, and we stop the server in
                # order; the death signal covers the case where we cannot (SIGKILL).
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            self._cleanup_home()
            raise ServerStartError(f"cannot execute {self.home}/bin/tritonserver: {exc}") from None
        return began

    def _finish_start(self, began: float) -> None:
        """Wait until the spawned server is ready (any thread); stop it if it does not get there."""
        try:
            self._wait_ready(began)
        except ServerStartError:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - began

    def failure(self) -> str | None:
        """Why this (started) server cannot serve now: it died (with its exit status) or is
        frozen (stopped by a signal); None while it runs, or when it was never started."""
        proc = self.process
        if proc is None:
            return None
        code = proc.poll()
        if code is not None:
            return ExitReport(True, code, "").describe()
        if processes.state(proc.pid) == "T":
            return f"tritonserver (pid {proc.pid}) is frozen (stopped by a signal)"
        return None

    async def restart(self) -> str:
        """Kill what is left of this server, then start it again (the watchdog's restart).

        Returns how the old one ended. The old server is SIGKILLed (a restart has nothing to
        drain: it replaces a dead, frozen or wedged server) and its model processes are ended at
        once (with the server reaped no one can take their health mutex any more); only then
        does the new one start, so the old one's memory is free first. The new one gets fresh
        ports unless ports were given (``grpc_url`` then names the new address). The process is
        spawned in the calling (event-loop) thread, so that it dies with the thread that runs the
        service; the waits run in worker threads so the event loop keeps serving meanwhile.
        """
        report = await asyncio.to_thread(self.stop, kill=True)
        ended = report.describe() if report is not None else "it had not been started"
        attempts = 3 if None in self._requested_ports else 1
        for attempt in range(attempts):
            try:
                await asyncio.to_thread(self._finish_start, self._spawn())
                return ended
            except ServerStartError as exc:
                if attempt + 1 < attempts and "already in use" in str(exc):
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, began: float) -> None:
        assert self.process is not None
        url = f"{self.http_url}/v2/health/ready"
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {code} during start-up; log tail:\n{self.log_tail()}"
                )
            # Ready means *this* process answers: the log says it bound its gRPC port, then HTTP
            # readiness (a port taken in the race since the free-port pick would answer for another).
            if f"Started GRPCInferenceService at 127.0.0.1:{self.grpc_port}" in self.log_tail(200):
                with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200 and self.process.poll() is None:
                        return
            if time.perf_counter() - began > self.start_timeout_s:
                raise ServerStartError(
                    f"tritonserver not ready after {self.start_timeout_s:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> ExitReport | None:
        """Stop the server and its model processes; remove its /dev/shm regions (see class doc).

        Returns how the server ended (also kept as ``exit_report``); None if it never started.
        ``kill``: SIGKILL at once, and its model processes as soon as it is reaped (a restart).
        """
        proc = self.process
        if proc is not None:
            died_before = proc.poll() is not None
            how = "exited on its own"
            if not died_before:
                if kill:
                    how = "killed for a restart"
                    proc.kill()
                elif processes.state(proc.pid) == "T":
                    how = "killed: it was frozen (stopped) and could not drain"
                    proc.kill()
                else:
                    how = "stopped (drained)"
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    how = f"killed: still running {self.stop_timeout_s:.0f} s after SIGTERM"
                    proc.kill()
                    proc.wait()
            self.exit_report = ExitReport(died_before, proc.returncode, how)
            self._end_orphan_stubs(0.0 if kill else 2.0)
            self.process = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        self.remove_shm_regions()
        self._cleanup_home()
        return self.exit_report

    def _end_orphan_stubs(self, grace_s: float = 2.0) -> None:
        """Stubs exit ~0.3 s after their server is reaped (they poll the parent), unless the server
        died holding the health mutex they share: then the stub's health thread blocks on it for
        good (seen after a SIGKILL mid-board). With the server gone nothing can take the mutex
        again, so a stub still alive after ``grace_s`` is killed. (While the server lives we never
        kill a stub: one killed holding that mutex makes tritonserver abort.)"""
        deadline = time.monotonic() + grace_s
        while processes.stubs_with_prefix(self.shm_prefix) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in processes.stubs_with_prefix(self.shm_prefix):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _cleanup_home(self) -> None:
        if self._given_home is None and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def shm_regions(self) -> list[str]:
        """Names of this server's regions currently in /dev/shm."""
        try:
            return sorted(n for n in os.listdir("/dev/shm") if n.startswith(self.shm_prefix))
        except OSError:
            return []

    def remove_shm_regions(self) -> list[str]:
        """Remove this server's leftover /dev/shm regions; returns what was removed."""
        removed = []
        for name in self.shm_regions():
            with contextlib.suppress(OSError):
                os.unlink(os.path.join("/dev/shm", name))
                removed.append(name)
        return removed

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------------
    def model_processes(self, model: str | None = None) -> list[ModelProcess]:
        """Living model (stub) processes of this server, optionally of one model, with RSS/PSS."""
        if not self.running():
            return []
        assert self.process is not None
        return processes.model_processes(self.process.pid, model)

    def process_probe(self) -> Callable[[str], list[ModelProcess]]:
        """A callable for ``TritonAdapter(process_probe=...)``: model name -> its living processes."""
        return lambda name: self.model_processes(name)

    def server_memory(self) -> ProcessMemory:
        """RSS/PSS of the tritonserver process itself (zeros when not running)."""
        if self.process is None:
            return ProcessMemory(0, 0, 0)
        return processes.memory(self.process.pid)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log ('' if there is none yet)."""
        if self.home is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class EmbeddedServerControl:
    """The watchdog's ``ServerControl`` (``orchestrator.engine.watchdog``) over embedded servers.

    ``servers``: server name -> its ``EmbeddedTriton``; ``reconnect(name, grpc_url)`` points the
    backend at a restarted server (``TritonBackend.reconnect``). External servers are not here:
    they cannot be restarted.
    """

    def __init__(
        self, servers: Mapping[str, EmbeddedTriton], reconnect: Callable[[str, str], Awaitable[None]]
    ) -> None:
        self.servers = dict(servers)
        self._reconnect = reconnect

    def restartable(self) -> Sequence[str]:
        return sorted(self.servers)

    def failure(self, server: str) -> str | None:
        return self.servers[server].failure()

    async def restart(self, server: str) -> str:
        triton = self.servers[server]
        ended = await triton.restart()
        await self._reconnect(server, triton.grpc_url)
        return ended
