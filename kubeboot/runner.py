"""Shell: connect to every host, gather facts, and run a workflow's phases with a barrier after each.

Plan, then apply: each phase plans per host from facts (pure), the plan is printed, and unless this is a
dry run the actions are executed host by host in parallel (bounded). A failed host is named in one error at
the barrier, after the other hosts finished the phase; re-running is the recovery.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from kubeboot import output
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.errors import (
    AuthenticationError,
    ConfigError,
    HostsFailedError,
    KubebootError,
    PreflightError,
    Problem,
)
from kubeboot.phases.base import Phase, PhaseContext, RunOptions, Selected, select
from kubeboot.phases.preflight import run_checks
from kubeboot.phases.runtime import OFFLINE_DIR, OFFLINE_LB_DIR
from kubeboot.plan.actions import Action, RunCommand, UploadFile, WriteFile, compare_file
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import FileState, HostFacts, gather_script, parse_facts
from kubeboot.transport.base import Transport, close_all
from kubeboot.transport.ssh import SSHTarget, SSHTransport

T = TypeVar("T")


def _default_ssh_config() -> Path | None:
    path = Path("~/.ssh/config").expanduser()
    return path if path.is_file() else None


@dataclass(frozen=True)
class ConnectOptions:
    known_hosts: Path = Path("~/.ssh/known_hosts").expanduser()
    accept_new_host_keys: bool = False
    ssh_config: Path | None = field(default_factory=_default_ssh_config)  # honoured like ssh(1) does
    concurrency: int = 10


class TraceLog:
    """The full trace (every command, redacted), appended to a file in the state directory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def __call__(self, line: str) -> None:
        if self.path is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self._lock, self.path.open("a") as fh:
            fh.write(f"{stamp} {output.redact(line)}\n")


def ssh_targets(cfg: ClusterConfig, opts: ConnectOptions) -> dict[str, SSHTarget]:
    """SSH settings per host; missing key files and unset sudo passwords are input errors (exit 3)."""
    problems: list[Problem] = []
    out: dict[str, SSHTarget] = {}
    for i, h in enumerate(cfg.hosts):
        key = str(Path(h.ssh.key_path).expanduser()) if h.ssh.key_path else None
        if key is not None and not Path(key).is_file():
            problems.append(Problem(f"spec.hosts[{i}].ssh.keyPath", f"key file {key} does not exist (host {h.name})"))
        password = None
        if h.ssh.sudo_password_env:
            password = os.environ.get(h.ssh.sudo_password_env)
            if password is None:
                problems.append(Problem(f"spec.hosts[{i}].ssh.sudoPasswordEnv",
                                        f"environment variable {h.ssh.sudo_password_env} is not set (host {h.name})"))
        out[h.name] = SSHTarget(h.name, str(h.address), h.ssh.port, h.ssh.user, key, opts.known_hosts,
                                opts.accept_new_host_keys, opts.ssh_config, h.ssh.bastion, password)
    if problems:
        raise ConfigError(problems, source="ssh settings")
    return out


def ssh_transports(cfg: ClusterConfig, opts: ConnectOptions, trace: TraceLog) -> dict[str, Transport]:
    """An SSH transport per host (nothing connects yet: each opens its connection on first use)."""
    return {name: SSHTransport(target, trace=trace) for name, target in ssh_targets(cfg, opts).items()}


def parallel(items: Sequence[T], fn: Callable[[T], object], concurrency: int) -> dict[int, BaseException]:
    """Run fn over items with at most `concurrency` at once; return the exceptions by item index."""
    errors: dict[int, BaseException] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items) or 1))) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut, i in futures.items():
            exc = fut.exception()
            if exc is not None:
                errors[i] = exc
    return errors


def combine(errors: Mapping[str, BaseException], phase: str) -> KubebootError:
    """One error naming every failed host. If all failed the same way, keep that error's exit code."""
    parts = []
    for host, exc in errors.items():
        msg = exc.message if isinstance(exc, KubebootError) else f"{type(exc).__name__}: {exc}"
        parts.append(msg if msg.startswith(host) else f"{host}: {msg}")
    kinds = {type(e) for e in errors.values()}
    text = f"[{phase}] {len(errors)} host(s) failed:\n  " + "\n  ".join(p.replace("\n", "\n    ") for p in parts)
    hints = {e.hint for e in errors.values() if isinstance(e, KubebootError) and e.hint}
    hint = "; ".join(sorted(hints)) or "fix the hosts named above and run again; finished steps are skipped"
    err: KubebootError = HostsFailedError(text, hint=hint)
    if len(kinds) == 1:
        (kind,) = kinds
        if issubclass(kind, KubebootError) and kind not in (KubebootError, ConfigError):
            err = kind(text, hint=hint)
    err.hosts = tuple(errors)
    return err


@dataclass
class RunResult:
    changes: int = 0
    planned: dict[str, list[str]] = field(default_factory=dict)  # phase path -> action descriptions
    seconds: dict[str, float] = field(default_factory=dict)  # top-level phase -> elapsed


StepSession = Callable[["Runner", str, bool, RunResult], object]


class Runner:
    def __init__(self, cfg: ClusterConfig, artifacts: Mapping[str, tuple[Artifact, ...]], options: RunOptions,
                 connect: ConnectOptions, reporter: output.Reporter, trace: TraceLog,
                 transports: Mapping[str, Transport] | None = None,
                 rerender: Callable[[Mapping[str, HostFacts]], Mapping[str, tuple[Artifact, ...]]] | None = None,
                 session: StepSession | None = None, extra_paths: Callable[[Host], Sequence[str]] | None = None
                 ) -> None:
        self.cfg = cfg
        self.artifacts = artifacts
        self.options = options
        self.connect_opts = connect
        self.rep = reporter
        self.trace = trace
        self.hosts: list[Host] = list(cfg.hosts)
        self.transports: dict[str, Transport] = dict(transports or {})
        self.facts: dict[str, HostFacts] = {}
        self.rerender = rerender  # desired files that depend on host facts (e.g. CA dirs in manifests)
        self.session = session  # builds the object cluster-level steps receive
        self.extra_paths = extra_paths  # files whose state the workflow decides on without placing them

    # --- connections and facts ------------------------------------------------------------------

    def _transport(self, host: Host) -> Transport:
        return self.transports[host.name]

    def gather(self, hosts: Sequence[Host]) -> None:
        """One round trip per host (in parallel) for everything later phases decide on."""
        def one(h: Host) -> None:
            paths = [a.path for a in self.artifacts.get(h.name, ())]
            if self.extra_paths is not None:
                paths += self.extra_paths(h)
            # uploaded offline packages are compared like any file, so a retry does not upload them again
            paths += [f"{OFFLINE_DIR}/{name}" for name, _data in self.options.offline_packages]
            paths += [f"{OFFLINE_LB_DIR}/{name}" for name, _data in self.options.lb_packages]
            users = self.cfg.kubectl_users if h.is_control_plane else ()
            resolv = self.cfg.kubelet_config.get("resolvConf")
            script = gather_script(paths, users, [resolv] if isinstance(resolv, str) and resolv else [])
            res = self._transport(h).run(script, display="gather facts", timeout=120)
            self.facts[h.name] = parse_facts(res.stdout)

        if not self.transports:  # input errors (key files, sudo password variables) before any connection
            self.transports.update(ssh_transports(self.cfg, self.connect_opts, self.trace))
        errors = parallel(list(hosts), one, self.connect_opts.concurrency)
        if errors:
            raise combine({hosts[i].name: e for i, e in errors.items()}, "connect")

    def close(self) -> None:
        close_all(self.transports.values())

    # --- phases ----------------------------------------------------------------------------------

    def context(self) -> PhaseContext:
        return PhaseContext(self.cfg, self.artifacts, self.facts, self.options)

    def preflight(self) -> None:
        self.rep.phase_start("preflight")
        findings = run_checks(self.context(), self.hosts)
        for fd in findings:
            level = "ERROR" if fd.severity == "error" else "warning"
            self.rep.info("preflight", fd.host, f"{level} {fd.check}: {fd.message}")
        errors = [fd for fd in findings if fd.severity == "error"]
        if errors:
            names = sorted({fd.check for fd in errors})
            lines = "\n  ".join(f"{fd.host}: [{fd.check}] {fd.message}" for fd in errors)
            raise PreflightError(f"[preflight] {len(errors)} error(s):\n  {lines}",
                                 hint=f"fix them, or skip checks with --ignore-preflight-errors={','.join(names)}")
        self.rep.phase_done("preflight", f"{len(self.hosts)} hosts passed "
                                         f"({sum(1 for f in findings if f.severity == 'warning')} warning(s))")

    def _apply(self, host: Host, actions: Sequence[Action], path: str) -> None:
        t = self._transport(host)
        files = dict(self.facts[host.name].files)
        for act in actions:
            if isinstance(act, WriteFile):
                a = act.artifact
                t.put(a.path, a.content, a.mode, a.owner, a.group)
                files[a.path] = FileState(a.digest, a.mode, a.owner, a.group)
                self.rep.info(path, host.name, f"wrote {a.describe()}: {act.reason}")
            elif isinstance(act, UploadFile):
                t.put_file(act.path, act.local, act.mode)
                self.rep.info(path, host.name, f"uploaded {act.local} ({act.size} bytes): {act.reason}")
            else:
                t.run(act.command, display=act.display, timeout=act.timeout)
                self.rep.info(path, host.name, f"ran `{act.display or act.command}`: {act.why}")
        self.facts[host.name] = replace(self.facts[host.name], files=files)

    def _with_diffs(self, host: str, actions: list[Action]) -> list[Action]:
        """For a plan, read the host's current copy of each changed non-secret file to show a diff."""
        out: list[Action] = []
        for act in actions:
            if isinstance(act, WriteFile) and not act.artifact.secret and "content changed" in act.reason:
                old = self.transports[host].get(act.artifact.path)
                if old is not None:
                    act = compare_file(act.artifact, self.facts[host].files.get(act.artifact.path),
                                       old.decode(errors="replace")) or act
            out.append(act)
        return out

    def run_phase(self, sel: Selected, dry_run: bool, result: RunResult) -> None:
        phase = sel.phase
        if phase.plan is None:
            return
        self.rep.phase_start(sel.path)
        ctx = self.context()
        plans: dict[str, list[Action]] = {}
        for h in self.hosts:
            if phase.applies_to(h):
                acts = list(phase.plan(ctx, h))
                if acts:
                    plans[h.name] = acts
        if dry_run:
            plans = {name: self._with_diffs(name, acts) for name, acts in plans.items()}
        described = []
        for name, acts in plans.items():
            for act in acts:
                line = act.describe()
                described.append(f"{name}: {line}")
                if dry_run:
                    self.rep.info(sel.path, name, f"would {line}")
                    if isinstance(act, WriteFile) and act.diff:
                        self.rep.info(sel.path, name, "\n" + act.diff.rstrip())
        result.planned[sel.path] = described
        count = sum(len(a) for a in plans.values())
        if dry_run or not plans:
            self.rep.phase_done(sel.path, f"{count} change(s) planned" if dry_run else "no changes")
            return
        by_name = {h.name: h for h in self.hosts}
        items = list(plans.items())
        errors = parallel(items, lambda item: self._apply(by_name[item[0]], item[1], sel.path),
                          self.connect_opts.concurrency)
        ran_commands = [name for name, acts in items if any(isinstance(a, (RunCommand, UploadFile)) for a in acts)]
        if ran_commands:  # commands change what facts describe (swap, modules, packages): look again
            failed = {items[i][0] for i in errors}
            ok = [by_name[n] for n in ran_commands if n not in failed]
            if ok:
                self.gather(ok)
        result.changes += count
        if errors:
            raise combine({items[i][0]: e for i, e in errors.items()}, sel.path)
        self.rep.phase_done(sel.path, f"{count} change(s) on {len(plans)} host(s)")

    def run(self, workflow: Sequence[Phase], only: Sequence[str], skip: Sequence[str], dry_run: bool) -> RunResult:
        try:
            selected = select(workflow, only, skip)
        except ValueError as exc:
            raise ConfigError([Problem("--only/--skip-phases", str(exc))], source="flags") from None
        top = frozenset(s.path.split("/")[0] for s in selected)
        self.options = replace(self.options, phases_in_run=top)
        result = RunResult()
        self.rep.phase_start("connect")
        self.gather(self.hosts)
        if self.rerender is not None:
            self.artifacts = self.rerender(self.facts)
        self.rep.phase_done("connect", f"facts from {len(self.hosts)} host(s)")
        for sel in selected:
            t0 = time.monotonic()
            if sel.path == "preflight":
                self.preflight()
            elif sel.phase.step is not None:
                if self.session is None:
                    raise AssertionError(f"phase {sel.path} needs a workflow session")
                sel.phase.step(self.session(self, sel.path, dry_run, result))
            else:
                self.run_phase(sel, dry_run, result)
            name = sel.path.split("/")[0]
            result.seconds[name] = result.seconds.get(name, 0.0) + time.monotonic() - t0
        return result

    def apply_actions(self, host: Host, actions: Sequence[Action], path: str) -> None:
        """Apply actions on one host now (a step's own plan), then refresh that host's facts."""
        self._apply(host, actions, path)
        if any(isinstance(a, (RunCommand, UploadFile)) for a in actions):
            self.gather([host])


__all__ = ["AuthenticationError", "ConnectOptions", "RunResult", "Runner", "TraceLog"]
