"""KerasTuner search over a recipe's training hyperparameters (``keras-cifar tune``).

The recipe's ``tune`` section names the tuner, the objective, the number of trials, the epochs per
trial and the search space (config.SPACE: learning rate, batch size, momentum, weight decay); every
other setting comes from the recipe as in ``run``. Trials train on the training split and are scored
on the validation split at their last epoch; the test split is only touched by ``--final``, which
retrains the best trial with ``run``'s own machinery.

The search folder ``OUT/<recipe>/search/`` holds KerasTuner's state (``oracle.json``,
``trial_*/trial.json``: tuning again resumes, and a trial that was interrupted is run again),
``search.yaml`` (what is searched, so that a different search is never mixed in), and what trials.py
writes about the trials: ``trials.csv``, ``trials.md``, ``objective.png`` and ``best.yaml``.

Distributed (KerasTuner's chief/worker mode): ``distributed(chief, worker)`` sets
KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT; the chief only serves the oracle
and writes the results, workers run trials. The chief's search space holds the search's identity
(``search_id``: its recipe, config, tune section and images) as a fixed hyperparameter, and a worker
whose own differs stops before it takes a trial.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner as kt
import numpy as np
import yaml

from keras_cifar import config as cfg
from keras_cifar.config import OBJECTIVES, Config, Search
from keras_cifar.core import backend
from keras_cifar.core.console import Eta, say
from keras_cifar.core.errors import ConfigError
from keras_cifar.core.files import make_dirs, write_atomic
from keras_cifar.data import sources as data_lib
from keras_cifar.data.pipelines import Feeder
from keras_cifar.tools import trials
from keras_cifar.training import cluster
from keras_cifar.training.callbacks import Stop
from keras_cifar.training.runs import diff_keys
from keras_cifar.training.sweep import run_sweep
from keras_cifar.training.train import compile_model

ENDED = ("COMPLETED", "FAILED", "INVALID")
SEARCH_ID = "search_id"  # the fixed hyperparameter that carries search_id from the chief to its workers

if TYPE_CHECKING:  # _Reporting joins KerasTuner's tuners, untyped: Any to mypy
    _Tuner = Any
else:
    _Tuner = object


# ------------------------------------------------------------------------------------- the model


class ResNetHyperModel(kt.HyperModel):
    """The recipe's ResNet-18 compiled with a trial's values; ``fit`` batches the training data at
    the trial's batch size, so batch size is a real hyperparameter (the schedule's steps follow it).

    Execution k of a trial (``executions_per_trial``) is seeded ``train.seeds[0] + k``, initial
    weights and shuffling alike, the way ``run`` seeds a run. With `identity` (a distributed search's
    search_id) the space holds it as the fixed hyperparameter SEARCH_ID."""

    def __init__(self, search: Search, n_train: int, identity: str | None = None) -> None:
        super().__init__(name="resnet18")
        self.search = search
        self.n_train = n_train
        self.identity = identity
        self.executions: collections.Counter[str] = collections.Counter()  # finished executions per trial

    def config(self, hp: Any) -> Config:
        seed = self.search.config.train.seeds[0] + self.executions[_key(hp)]
        values, epochs = trials.trial_values(hp, self.search), trials.trial_epochs(hp, self.search)
        return trials.trial_config(self.search, values, epochs, [seed])

    def build(self, hp: Any) -> keras.Model:
        if self.identity:
            hp.Fixed(SEARCH_ID, self.identity)
        config = self.config(hp)
        keras.utils.set_random_seed(config.train.seeds[0])
        backend.make_deterministic(config.train.deterministic)
        with cluster.distribute(config).scope():  # train.distribution: data_parallel spreads each trial over the devices
            return compile_model(config, math.ceil(self.n_train / config.data.batch_size))

    def fit(
        self,
        hp: Any,
        model: keras.Model,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        epochs: int,
        initial_epoch: int = 0,
        callbacks: Sequence[Any] = (),
        verbose: int = 0,
    ) -> dict[str, float]:
        """Train on `train` = (x, y) from epoch 0, score on `val`; returns the last epoch's metrics.
        Hyperband's `initial_epoch` is not used: see HyperbandTuner."""
        config = self.config(hp)
        feeder = Feeder(config.data.batch_size, config.data.pipeline, flip=config.data.flip)
        stream = feeder.train(*train, config.train.seeds[0], epochs)
        history = model.fit(
            **stream.fit_arguments(),
            **feeder.validation(*val),
            epochs=epochs,
            verbose=verbose,
            callbacks=[stream.callback(), Stop(), *callbacks, keras.callbacks.TerminateOnNaN()],
        )
        self.executions[_key(hp)] += 1
        return {name: float(values[-1]) for name, values in history.history.items()}


def _key(hp: Any) -> str:
    return json.dumps(hp.values, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------- the tuner


class _Reporting(_Tuner):
    """What keras-cifar adds to a KerasTuner tuner: a line per trial and per epoch, the trial's
    wall-clock seconds as a metric, and (running alone) the results rewritten after every trial with
    the search's ETA (`eta`, set by run_search)."""

    eta: Any = None  # an Eta, which run_search sets when the search runs alone (role local)

    def on_trial_begin(self, trial: Any) -> None:
        super().on_trial_begin(trial)
        hp = trial.hyperparameters
        self.trial_start = time.perf_counter()
        self.trial_epochs = trials.trial_epochs(hp, self.hypermodel.search)
        extra = (
            f", promoted from trial {hp.values['tuner/trial_id']}, trained from the start"
            if "tuner/trial_id" in hp.values
            else ""
        )  # hyperband's later rounds (see HyperbandTuner)
        values = trials.trial_values(hp.copy(), self.hypermodel.search)
        say(f"{_who()}trial {trial.trial_id}: {trials.describe(values)}, {self.trial_epochs} epoch(s){extra}")

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        results = super().run_trial(trial, *args, **kwargs)
        seconds = time.perf_counter() - self.trial_start
        return [{**r, "seconds": seconds} for r in results]

    def on_epoch_begin(self, trial: Any, model: keras.Model, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, trial: Any, model: keras.Model, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        say(
            f"  {_who()}trial {trial.trial_id} epoch {epoch + 1}/{self.trial_epochs}  "
            f"loss {logs.get('loss', math.nan):.4f}  acc {logs.get('accuracy', math.nan):.2%}  "
            f"val_loss {logs.get('val_loss', math.nan):.4f}  val_acc {logs.get('val_accuracy', math.nan):.2%}  "
            f"{time.perf_counter() - self.epoch_start:.1f}s"
        )

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)  # the oracle scores the trial
        ended = self.oracle.get_trial(trial.trial_id)
        objective = self.oracle.objective.name
        line = f"{_who()}trial {trial.trial_id} {trials.status(ended).lower()}"
        if ended.status == "COMPLETED":
            line += f": {objective} {trials.value_text(objective, ended.score)} in {trials.seconds(ended):.0f}s"
        elif ended.message:
            line += f": {trials.last_line(ended.message)}"
        best = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        if best:
            line += f" | best so far: trial {best[0].trial_id}, {trials.value_text(objective, best[0].score)}"
        if role() == "local":
            self.eta.restart()  # every trial builds and compiles its own model
            self.eta.tick(time.perf_counter() - self.trial_start)
            line += f" | {self.eta.text('trials')}"
        say(line)
        if role() == "local":
            trials.write_results(Path(self.project_dir), self.hypermodel.search, self.oracle.trials)


class RandomTuner(_Reporting, kt.RandomSearch):
    pass


class BayesianTuner(_Reporting, kt.BayesianOptimization):
    pass


class HyperbandTuner(_Reporting, kt.Hyperband):
    """Hyperband whose promoted trials (its later rounds) train their whole schedule from the start.
    KerasTuner's would load the earlier trial's weights and train only the remaining epochs, with a
    fresh optimizer on a schedule compiled for all of them: a learning rate never annealed, a
    training that best.yaml, which trains the full schedule, does not repeat. Trained from the start,
    a trial's score is that of the run its best.yaml describes (docs/tuning.md)."""

    def _build_hypermodel(self, hp: Any) -> keras.Model:
        return kt.Tuner._build_hypermodel(self, hp)  # not Hyperband's, which loads the earlier trial's weights


def make_tuner(search: Search, folder: Path, n_train: int, identity: str | None = None) -> Any:
    """The KerasTuner tuner for `search`, keeping its state in `folder` (reloaded when present);
    `identity`: see ResNetHyperModel."""
    t = search.tune
    common = dict(
        hypermodel=ResNetHyperModel(search, n_train, identity),
        objective=kt.Objective(t["objective"], OBJECTIVES[t["objective"]]),
        seed=t["seed"],
        executions_per_trial=t["executions_per_trial"],
        directory=str(Path(folder).parent),
        project_name=Path(folder).name,
    )
    if t["tuner"] == "hyperband":
        tuner = HyperbandTuner(max_epochs=t["epochs"], **common)
        tuner.oracle.max_trials = t["max_trials"]  # the base Oracle stops there; Hyperband leaves it unset
        return tuner
    return {"random": RandomTuner, "bayesian": BayesianTuner}[t["tuner"]](max_trials=t["max_trials"], **common)


# ------------------------------------------------------------------------------------- distribution


@contextlib.contextmanager
def distributed(chief: str | None = None, worker: str | None = None) -> Iterator[None]:
    """KerasTuner's distributed-mode variables for ``--chief HOST:PORT`` (this process serves the
    oracle) or ``--worker ID --chief HOST:PORT`` (this process runs trials), restored afterwards.
    Without options the variables are left as they are, so KerasTuner's own convention still works."""
    if worker is not None and not chief:
        raise ConfigError("--worker needs --chief HOST:PORT, the address of the chief's oracle")
    if worker is not None and (not str(worker).strip() or "chief" in str(worker)):
        raise ConfigError(f"--worker: a worker ID is a name unique among the workers without 'chief', got {worker!r}")
    if not chief:
        yield
        return
    host, port = cluster.parse_address(chief, "--chief")
    tuner_id = "chief" if worker is None else f"worker-{worker}"
    with backend.environ(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port)):
        yield


def role() -> str:
    """local, chief or worker, from KerasTuner's variables (as KerasTuner itself reads them)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _who() -> str:
    return f"[{os.environ['KERASTUNER_TUNER_ID']}] " if role() == "worker" else ""


# ------------------------------------------------------------------------------------- the search


def search_folder(out_root: Path | str, search: Search) -> Path:
    return Path(out_root) / search.recipe / "search"


def _record(search: Search, data_source: str | None) -> dict[str, Any]:
    """What search.yaml records: only tune.max_trials may change within a search, to extend it."""
    return {
        "recipe": search.recipe,
        "variant": search.variant,
        "data_source": data_source,
        "tune": {k: v for k, v in search.tune.items() if k != "max_trials"},
        **search.config.to_dict(),
    }


def search_id(search: Search, cifar: data_lib.Cifar) -> str:
    """A hash of what makes a search one: search.yaml's record with the images themselves
    (data.fingerprint) in place of their path, which differs from machine to machine."""
    record = {**_record(search, None), "data_source": data_lib.fingerprint(cifar)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_chief(oracle: Any, identity: str | None) -> None:
    """Stop a worker whose search (`identity`, its search_id) is not its chief's, before it runs a trial."""
    chief = oracle.get_space().values.get(SEARCH_ID)
    if chief != identity:
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        raise ConfigError(
            f"this worker's search differs from the one the chief at {address} serves (the recipe, its variant, "
            "a --set/--subset/--epochs option or the images of --data); start every worker with the chief's "
            "recipe, options and data (the chief's search.yaml records them)"
        )


def check_folder(folder: Path, search: Search, data_source: str) -> None:
    """Record what `folder` searches in search.yaml; refuse a folder holding a different search
    (only tune.max_trials may change, to extend a search)."""
    record = _record(search, data_source)
    path = Path(folder) / "search.yaml"
    if path.exists():
        diffs = diff_keys(yaml.safe_load(path.read_text()) or {}, record)
        if diffs:
            raise ConfigError(
                f"{folder} already holds a different search (differs in {', '.join(diffs)}); "
                "use another --out or delete that folder"
            )
        return
    make_dirs(path.parent)
    write_atomic(path, yaml.safe_dump(record, sort_keys=False))


def run_search(search: Search, cifar: data_lib.Cifar, out_root: Path | str = "runs", final: bool = False) -> str | None:
    """Run (or resume) the search; returns the best trial's id, or None (a worker, or no trial
    completed). With `final`, retrain the best trial with ``run`` and report its test accuracy."""
    who = role()
    if final and who == "worker":
        raise ConfigError("--final retrains on the chief (or without --chief); a worker only runs trials")
    folder = search_folder(out_root, search)
    if who != "worker":  # a worker's folder holds KerasTuner's state of its trials; its search is the chief's
        check_folder(folder, search, cifar.source)
    d, t = search.config.data, search.tune
    splits = data_lib.split(cifar, d.subset, d.eval_subset)
    identity = search_id(search, cifar) if who != "local" else None
    tuner = make_tuner(search, folder, len(splits.train[1]), identity)
    if who == "worker":
        check_chief(tuner.oracle, identity)
    say(
        f"{_who()}{t['tuner']} search of {', '.join(trials.range_text(n, e) for n, e in t['space'].items())}: "
        f"{t['max_trials']} trials x {t['epochs']} epoch(s) x {t['executions_per_trial']} execution(s), "
        f"objective {t['objective']}; data {cifar.source} ({len(splits.train[1])} train / {len(splits.val[1])} val "
        f"images); width {search.config.model.width}, backend {keras.backend.backend()} -> {folder}"
    )
    if who == "chief":
        host, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
        say(f"chief: serving the search on {host}:{port}; start workers with --worker ID --chief HOST:{port}")
    elif who == "local":
        done = sum(tr.status in ENDED for tr in tuner.oracle.trials.values())
        tuner.eta = Eta(t["max_trials"])
        tuner.eta.skip(done)
        if done:
            say(f"resuming: {done} trial(s) already ended")
    if not (who == "chief" and _finished(tuner.oracle, t["max_trials"])):
        try:
            tuner.search(train=splits.train, val=splits.val, epochs=t["epochs"], verbose=1 if who == "chief" else 0)
        except RuntimeError as e:  # KerasTuner gives up after 3 failed trials in a row
            if "consecutive failures" not in str(e):
                raise
            say(f"search stopped: {str(e).splitlines()[0]}")
    if who == "worker":
        say(f"{_who()}no trials left; the chief writes the results")
        return None
    best = trials.write_results(folder, search, tuner.oracle.trials)
    say((folder / "trials.md").read_text())
    if best is None:
        say(f"no trial completed; see the messages in {folder / 'trials.md'}")
        return None
    say(f"wrote {folder}/: trials.csv, trials.md, objective.png, best.yaml (trial {best}, a recipe `keras-cifar run` trains)")
    if final:
        say(f"final: retraining trial {best} from best.yaml, with test evaluation")
        results = run_sweep(cfg.sweep(cfg.load_recipe(folder / "best.yaml")), cifar, out_root)
        accs = [m.test_accuracy for _, m in results if m.test_accuracy is not None]
        if accs:
            say(f"final: trial {best}, test accuracy {sum(accs) / len(accs):.2%} over {len(accs)} seed(s)")
    return best


def _finished(oracle: Any, max_trials: int) -> bool:
    """Every trial the search may run has ended (a chief then has nothing to serve)."""
    ended = [tr.status in ENDED for tr in oracle.trials.values()]
    return len(ended) >= max_trials and all(ended)
