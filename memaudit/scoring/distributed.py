"""``--engine ray``: scoring and generation dealt out to Ray workers, one model replica each.

A worker is a Ray actor holding one replica of the model: one per GPU of the cluster, or, on
CPUs, one per worker with ``cluster CPUs / workers`` torch threads. Each worker loads the model
from its directory by path, under the loader's own rules (local, safetensors only, remote code
behind the flag), and refuses files whose fingerprint is not the driver's: models are never
pickled over.

Results equal the local engine's because the work is cut exactly as the local engine cuts it:

- scoring: :func:`~memaudit.scoring.engine.score_texts` plans as always (cache look-up, length
  sort, shard cuts) and hands the shards to :class:`RayEngine` (through
  :func:`~memaudit.scoring.engine.shard_runner`); a worker scores a shard with the engine's own
  shard function and writes the same content-addressed cache shard (temp file + rename) into
  the cache dir, which on a cluster is storage every node sees;
- generation: the batches :func:`~memaudit.models.generation.greedy_generate` would decode
  (``generation_batches``) are dealt out whole and reassembled in prompt order; sampled
  continuations are dealt out by prompt, each with its own seed.

Faults: a worker that dies is restarted and its queued tasks retried (``MAX_RETRIES``). A
task's result reaches the driver once, from the attempt that finished, so nothing is counted
twice; a retried shard is scored again and written again under the same name. If a run stops
anyway, its finished shards are in the cache and a rerun scores only the missing ones.

Ray is imported only here, and only once ``--engine ray`` is asked for.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from memaudit.errors import InputError, MemauditError, MemauditWarning, ModelLoadError
from memaudit.io.progress import Progress
from memaudit.models.base import CausalLM
from memaudit.models.generation import generation_batches, greedy_generate, sample

from .cache import ScoreCache, write_shard
from .engine import ScoreSettings, ScoreStats, Shard, _score_shard, shard_runner
from .tokenscores import TextScores

MAX_RETRIES = 2  # restarts of a dead worker, and retries of each of its tasks
IN_FLIGHT = 2  # tasks queued per worker, so that none waits on the driver between tasks
CONNECT_TIMEOUT_S = 3.0  # a cluster address that does not answer within this fails the run
PLACEMENT_TIMEOUT_S = 300.0  # workers not started by then: the cluster cannot hold them
CPU_WORKERS = 2  # default replicas on a cluster without GPUs
RAY_CLIENT_PORT = 10001

# Workers, and the replica each holds, are kept for the next command of this process when Ray
# was already running (a notebook, the tests); ``release_workers`` frees them and their CPUs.
_POOLS: dict[tuple, list[Any]] = {}


class UnsharedCacheWarning(MemauditWarning):
    """Cache shards written by Ray workers are not visible to the driver."""


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the driver's model, and the fingerprints its files must have."""

    path: str
    dtype: str
    trust_remote_code: bool
    fingerprint: str
    tokenizer_fingerprint: str
    adapter: str | None = None  # a PEFT adapter dir, merged on load as the driver merged it
    bos: str = "auto"  # the driver's BOS rule (workers get token ids, but encode the same)


def model_spec(model: CausalLM, *, trust_remote_code: bool) -> ModelSpec:
    """The driver's model as a worker reloads it: same directory, same resolved dtype."""
    name, dtype = getattr(model, "name", None), getattr(model, "dtype", None)
    if name is None or not Path(name).is_dir() or not isinstance(dtype, torch.dtype):
        raise InputError(
            f"--engine ray loads each model from its directory; {type(model).__name__} has none"
        )
    return ModelSpec(
        str(Path(name).resolve()),
        str(dtype).removeprefix("torch."),
        trust_remote_code,
        model.fingerprint,
        model.tokenizer_fingerprint,
        _adapter_path(model),
        getattr(getattr(model, "bos", None), "rule", "auto"),
    )


def _adapter_path(model: CausalLM) -> str | None:
    adapter = getattr(model, "adapter", None)
    return None if adapter is None else str(Path(adapter).resolve())


# ---- the engines a command opens ----------------------------------------------------------------


class LocalEngine:
    """``--engine local``: everything in this process (score_texts' own shard loop)."""

    name = "local"

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}

    def greedy_generate(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        batch_size: int,
        progress: Progress | None = None,
        stage: str = "generating",
    ) -> list[list[int]]:
        return greedy_generate(
            model, prompts, max_new_tokens, batch_size=batch_size, progress=progress, stage=stage
        )

    def sample_prompts(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        n: int,
        length: int,
        *,
        temperature: float,
        seeds: Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
        stage: str = "generating",
    ) -> list[list[list[int]]]:
        """``n`` sampled continuations of each prompt, prompt ``i`` seeded by ``seeds[i]``."""
        out = []
        for i, (p, seed) in enumerate(zip(prompts, seeds)):
            out.append(
                sample(
                    model, p, n, length, temperature=temperature, seed=seed, batch_size=batch_size
                )
            )
            if progress is not None:
                progress(stage, i + 1, len(prompts))
        return out


def open_engine(
    engine: str,
    *,
    address: str | None,
    workers: int | None,
    device: str,
    trust_remote_code: bool,
) -> LocalEngine | RayEngine:
    """The engine a command runs on, checked but not started: enter it to start it.

    Raises
    ------
    InputError
        ``ray`` without Ray installed, or a cluster address that does not answer within
        ``CONNECT_TIMEOUT_S`` seconds. Call it before the run dir is begun: nothing is written.
    """
    if engine == "local":
        return LocalEngine()
    import_ray()
    if address is not None:
        check_ray_address(address)
    return RayEngine(
        address=address, workers=workers, device=device, trust_remote_code=trust_remote_code
    )


class RayEngine:
    """``--engine ray``: a pool of workers; while entered, every ``score_texts`` call deals its
    shards out to them.
    """

    name = "ray"

    def __init__(
        self, *, address: str | None, workers: int | None, device: str, trust_remote_code: bool
    ) -> None:
        self.address, self.device, self.trust_remote_code = address, device, trust_remote_code
        self.requested_workers = workers
        self.workers: list[Any] = []  # actor handles, once entered
        self.layout: dict[str, Any] = {}
        self._started = False
        self._stack = ExitStack()
        self._warned_unshared = False

    def __enter__(self) -> RayEngine:
        ray = import_ray()
        self._started = not ray.is_initialized()
        if self._started:
            init_ray(self.address)
        try:
            self.workers, self.layout = _pool(ray, self.requested_workers, self.device)
        except BaseException:
            self._shutdown(ray)
            raise
        self._stack.enter_context(shard_runner(self))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._shutdown(import_ray())

    def _shutdown(self, ray: Any) -> None:
        if self._started:  # a Ray this engine started goes with it; a user's stays up
            _POOLS.clear()
            ray.shutdown()
            self._started = False

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "address": self.address or "local", **self.layout}

    # -- scoring: score_texts' shards -----------------------------------------------------------

    def run_shards(
        self,
        model: CausalLM,
        cache: ScoreCache,
        shards: list[Shard],
        uncached: set[str],
        *,
        window: tuple[int, int],
        settings: ScoreSettings,
        on_batch: Callable[[int], None],
    ) -> Iterator[tuple[Shard, list[TextScores], ScoreStats]]:
        """Each shard scored (and written to the cache) by a worker, yielded as it finishes;
        ``on_batch`` hears of each finished shard's scored tokens."""
        ray = import_ray()
        spec = ray.put(model_spec(model, trust_remote_code=self.trust_remote_code))
        directory = None if cache.dir is None else str(cache.dir.resolve())
        calls = [
            partial(
                _remote_score,
                args=(
                    spec,
                    shard.hashes,
                    shard.ids,
                    [h not in uncached for h in shard.hashes],
                    window,
                    settings,
                    directory,
                ),
            )
            for shard in shards
        ]
        for i, (scores, stats, written) in deal(ray, self.workers, calls):
            self._check_shared(written)
            on_batch(stats.tokens_scored)
            yield shards[i], scores, stats

    def _check_shared(self, written: str | None) -> None:
        if written is None or self._warned_unshared or Path(written).exists():
            return
        self._warned_unshared = True
        warnings.warn(
            f"cache shard {written}, written by a Ray worker, is not visible here: put the "
            "cache dir (--cache-dir or $MEMAUDIT_CACHE) on storage every node sees, or a rerun "
            "scores everything again",
            UnsharedCacheWarning,
            stacklevel=2,
        )

    # -- generation: whole batches, reassembled in prompt order ----------------------------------

    def greedy_generate(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        batch_size: int,
        progress: Progress | None = None,
        stage: str = "generating",
    ) -> list[list[int]]:
        """:func:`~memaudit.models.generation.greedy_generate`'s batches, one task each."""
        ray = import_ray()
        spec = ray.put(model_spec(model, trust_remote_code=self.trust_remote_code))
        batches = generation_batches(prompts, batch_size)
        calls = [
            partial(_remote_greedy, args=(spec, [list(prompts[i]) for i in b], max_new_tokens))
            for b in batches
        ]
        out: list[list[int]] = [[] for _ in prompts]
        done = 0
        for k, generated in deal(ray, self.workers, calls):
            for i, g in zip(batches[k], generated):
                out[i] = g
            done += len(batches[k])
            if progress is not None:
                progress(stage, done, len(prompts))
        return out

    def sample_prompts(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        n: int,
        length: int,
        *,
        temperature: float,
        seeds: Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
        stage: str = "generating",
    ) -> list[list[list[int]]]:
        """:meth:`LocalEngine.sample_prompts`, a few prompts per task."""
        ray = import_ray()
        spec = ray.put(model_spec(model, trust_remote_code=self.trust_remote_code))
        per_task = max(1, batch_size // n)
        groups = [
            range(s, min(s + per_task, len(prompts))) for s in range(0, len(prompts), per_task)
        ]
        calls = [
            partial(
                _remote_sample,
                args=(
                    spec,
                    [list(prompts[i]) for i in g],
                    [seeds[i] for i in g],
                    (n, length, temperature, batch_size),
                ),
            )
            for g in groups
        ]
        out: list[list[list[int]]] = [[] for _ in prompts]
        done = 0
        for k, samples in deal(ray, self.workers, calls):
            for i, s in zip(groups[k], samples):
                out[i] = s
            done += len(groups[k])
            if progress is not None:
                progress(stage, done, len(prompts))
        return out


def _remote_score(worker: Any, *, args: tuple) -> Any:
    return worker.score.remote(*args)


def _remote_greedy(worker: Any, *, args: tuple) -> Any:
    return worker.greedy.remote(*args)


def _remote_sample(worker: Any, *, args: tuple) -> Any:
    return worker.sample.remote(*args)


# ---- the worker ----------------------------------------------------------------------------------


class Worker:
    """One model replica (a Ray actor); keeps the last model it loaded."""

    def __init__(self, device: str, threads: int) -> None:
        torch.set_num_threads(threads)  # the CPUs Ray gave this worker, not the whole node's
        self._device = device
        self._spec: ModelSpec | None = None
        self._model: Any = None

    def ready(self) -> int:
        return os.getpid()

    def score(
        self,
        spec: ModelSpec,
        hashes: list[str],
        ids: list[list[int]],
        keep: list[bool],
        window: tuple[int, int],
        settings: ScoreSettings,
        cache_dir: str | None,
    ) -> tuple[list[TextScores], ScoreStats, str | None]:
        """One shard scored as the local engine scores it, written to the cache (but the texts
        ``keep`` leaves out), and returned.
        """
        scores, stats = _score_shard(self._load(spec), ids, *window, settings)
        written = None
        kept = {h: s for h, s, k in zip(hashes, scores, keep) if k}
        if cache_dir is not None and kept:
            written = str(write_shard(Path(cache_dir), kept))
        return scores, stats, written

    def greedy(
        self, spec: ModelSpec, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        """One of greedy_generate's batches (already length-sorted: it stays one batch)."""
        return greedy_generate(self._load(spec), prompts, max_new_tokens, batch_size=len(prompts))

    def sample(
        self,
        spec: ModelSpec,
        prompts: list[list[int]],
        seeds: list[int],
        shape: tuple[int, int, float, int],
    ) -> list[list[list[int]]]:
        n, length, temperature, batch_size = shape
        model = self._load(spec)
        return [
            sample(model, p, n, length, temperature=temperature, seed=s, batch_size=batch_size)
            for p, s in zip(prompts, seeds)
        ]

    def _load(self, spec: ModelSpec) -> Any:
        if spec == self._spec:
            return self._model
        from memaudit.models.hf import LoadOptions, load_causal_lm

        self._model = self._spec = None  # the old replica goes before the new one loads
        options = LoadOptions(
            dtype=spec.dtype,
            device=self._device,
            trust_remote_code=spec.trust_remote_code,
            bos=spec.bos,
        )
        model = load_causal_lm(spec.path, options, adapter=spec.adapter)
        theirs = (model.fingerprint, model.tokenizer_fingerprint)
        if theirs != (spec.fingerprint, spec.tokenizer_fingerprint):
            raise ModelLoadError(
                f"{spec.path}: the files on Ray node {socket.gethostname()} are not the driver's "
                f"(fingerprint {model.fingerprint[:12]}, the driver's {spec.fingerprint[:12]}); "
                "every node must see the same model dir"
            )
        self._model, self._spec = model, spec
        return model


# ---- Ray plumbing ------------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'memaudit[dist]'") from None
    return ray


def ray_temp_dir() -> str:
    """Ray's session files: $RAY_TMPDIR when set (tests point it at a folder they own)."""
    path = os.environ.get("RAY_TMPDIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "memaudit", "ray"
    )
    os.makedirs(path, exist_ok=True)
    return os.path.abspath(path)


def init_ray(address: str | None, *, num_cpus: int | None = None) -> None:
    """Connect to the cluster at ``address``, or start a local Ray on this machine's CPUs."""
    ray = import_ray()
    quiet = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is not None:
        ray.init(address=address, **quiet)
    else:
        cpus = num_cpus or len(os.sched_getaffinity(0))
        ray.init(num_cpus=cpus, _temp_dir=ray_temp_dir(), **quiet)


def check_ray_address(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`InputError` unless something answers at ``address`` within ``timeout``
    seconds (``ray.init`` itself would wait minutes on an address that does not answer).
    """
    target = _bootstrap_address(address)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address '{address}' is not HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InputError(
            f"Ray address '{address}' does not answer ({target}: {reason} within {timeout:g} s)"
        ) from None


def _bootstrap_address(address: str) -> str:
    if address.startswith("ray://"):
        rest = address.removeprefix("ray://").rstrip("/")
        return rest if ":" in rest else f"{rest}:{RAY_CLIENT_PORT}"
    if address != "auto":
        return address
    # Ray's own resolution of 'auto': $RAY_ADDRESS, else the cluster `ray start` left here
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError):
        found = None
    if not found:
        raise InputError(
            "Ray address 'auto': no running Ray cluster found on this node (start one with "
            "`ray start --head`, or give HOST:PORT)"
        )
    return str(found)


def release_workers() -> None:
    """End the workers kept from earlier commands (their CPUs and GPUs go back to Ray)."""
    ray = import_ray()
    for pool in _POOLS.values():
        for worker in pool:
            ray.kill(worker)
    _POOLS.clear()


def _pool(ray: Any, workers: int | None, device: str) -> tuple[list[Any], dict[str, Any]]:
    """The workers (started, or kept from an earlier command of this Ray session) and their
    layout.
    """
    n, worker_device, threads = _layout(ray, workers, device)
    layout = {"workers": n, "device": worker_device, "threads_per_worker": threads}
    key = (ray.get_runtime_context().get_job_id(), n, worker_device, threads)
    if key in _POOLS:
        return _POOLS[key], layout
    gpu = worker_device == "cuda"
    actor = ray.remote(Worker).options(
        num_cpus=threads,
        num_gpus=1 if gpu else 0,
        max_restarts=MAX_RETRIES,
        max_task_retries=MAX_RETRIES,
    )
    pool = [actor.remote(worker_device, threads) for _ in range(n)]
    try:
        ray.get([w.ready.remote() for w in pool], timeout=PLACEMENT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        for w in pool:
            ray.kill(w)
        each = f"{threads} CPU{'s' if threads > 1 else ''}" + (" and 1 GPU" if gpu else "")
        raise InputError(
            f"Ray could not start {n} workers of {each} each within {PLACEMENT_TIMEOUT_S:g} s "
            f"(the cluster has {ray.cluster_resources()}); lower --ray-workers"
        ) from None
    _POOLS[key] = pool
    return pool, layout


def _layout(ray: Any, workers: int | None, device: str) -> tuple[int, str, int]:
    """(replicas, their device, torch threads each): one per GPU when the cluster has GPUs
    (and --device is not cpu), else CPU workers sharing the CPUs.
    """
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus and device != "cpu":
        if (workers or gpus) > gpus:
            raise InputError(f"--ray-workers {workers}: the Ray cluster has {gpus} GPUs")
        return workers or gpus, "cuda", 1
    if device not in ("auto", "cpu"):
        raise InputError(f"--device {device}: the Ray cluster has no GPU; use --device cpu")
    n = workers or CPU_WORKERS
    if n > cpus:
        raise InputError(f"--ray-workers {n}: the Ray cluster has {cpus} CPUs, one per worker")
    node_cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    return n, "cpu", max(1, min(cpus // n, max(node_cpus, default=1)))


def deal(
    ray: Any, workers: Sequence[Any], calls: Sequence[Callable[[Any], Any]]
) -> Iterator[tuple[int, Any]]:
    """Make each call on a worker (``call(worker)`` submits a task, returning its ref),
    ``IN_FLIGHT`` queued per worker; yield ``(index of the call, result)`` as each finishes.

    A worker's own error is raised here as itself (a memaudit error keeps its one line); a
    worker that died past its restarts stops the run. Calls not yet finished are cancelled.
    """
    queue = deque(enumerate(calls))
    running: dict[Any, tuple[int, Any]] = {}

    def submit(worker: Any) -> None:
        if queue:
            i, call = queue.popleft()
            running[call(worker)] = (i, worker)

    for _ in range(IN_FLIGHT):
        for w in workers:
            submit(w)
    try:
        while running:
            [ready], _ = ray.wait(list(running), num_returns=1)
            i, worker = running.pop(ready)
            result = _get(ray, ready)
            submit(worker)
            yield i, result
    finally:
        for ref in running:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 (a task that finished meanwhile cannot be cancelled)
                pass


def _get(ray: Any, ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, MemauditError):
            raise e.cause from None
        raise
    except ray.exceptions.RayActorError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MemauditError(
            f"a Ray worker died and could not be restarted ({reason[:200]}); run the command "
            "again: finished shards are in the cache and are not scored again"
        ) from None
