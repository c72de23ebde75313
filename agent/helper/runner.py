"""The helper's I/O shell: follow the Workload API, write files atomically, run or signal the consumer.

Daemon mode (default): one thread follows the X.509 context stream (reconnecting with backoff);
every update writes the certificate, key and bundle, then starts ``cmd`` the first time and
sends ``renew_signal`` to it afterwards (restarting it if it exited), and to the process named in
``pid_file_name``. One thread per JWT-SVID file refreshes it at half its remaining lifetime
(backoff 1 s to 60 s on errors); one thread follows the JWT bundles. SIGTERM/SIGINT stop
everything (the managed child gets SIGTERM) and exit 0.

One-shot mode (``daemon_mode = false``): fetch and write everything once; any error exits 1.
Files are replaced atomically (write to a temporary file in the same directory, fsync, rename),
so a reader never sees a partial or empty file; keys and JWTs are 0600, certificates 0644.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

from spiffe_agent.helper.config import HelperConfig, JwtSvidFile
from spiffe_agent.helper.files import jwt_bundle_file, x509_files
from spiffe_py.clock import Clock, SystemClock
from spiffe_py.errors import SpiffeError
from spiffe_py.fsutil import write_private, write_public
from spiffe_py.workloadapi import Backoff, Watch, WorkloadApiClient, X509Context

log = logging.getLogger("spiffe_agent.helper")

JWT_RETRY = Backoff(initial=1.0, maximum=60.0, multiplier=2.0, jitter=0.1)
PID_FILE_RETRIES = 10


class Helper:
    """One running helper: its config, its Workload API client and the consumer process."""

    def __init__(self, cfg: HelperConfig, *, clock: Clock | None = None, timeout: float = 10.0) -> None:
        self.cfg = cfg
        self._clock = clock or SystemClock()
        self._client = WorkloadApiClient(cfg.agent_address, timeout=timeout)
        self._stream_client = WorkloadApiClient(cfg.agent_address)  # streams: no deadline
        self._stop = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._child_lock = threading.Lock()
        self._x509_writes = 0
        self._rng = random.Random()  # backoff jitter only  # noqa: S311
        self._watch: Watch[X509Context] | None = None

    # -- writing ---------------------------------------------------------------------------

    def write_x509(self, ctx: X509Context) -> None:
        cert, key, bundle = x509_files(ctx, add_intermediates_to_bundle=self.cfg.add_intermediates_to_bundle)
        d = self.cfg.cert_dir
        # key first: a consumer that reloads on the certificate's change finds a matching key already there
        write_private(d / self.cfg.svid_key_file_name, key)
        write_public(d / self.cfg.svid_file_name, cert)
        write_public(d / self.cfg.svid_bundle_file_name, bundle)
        self._x509_writes += 1
        log.info("wrote X509-SVID %s (expires %s) to %s", ctx.default_svid.spiffe_id,
                 ctx.default_svid.expires_at.isoformat(), d / self.cfg.svid_file_name)

    def write_jwt(self, item: JwtSvidFile) -> timedelta:
        """Fetch and write one JWT-SVID; returns its remaining lifetime."""
        svid = self._client.fetch_jwt_svid(item.audiences)
        write_private(self.cfg.cert_dir / item.file_name, svid.token.encode())
        remaining = svid.expiry - self._clock.now()
        log.info("wrote JWT-SVID %s for %s to %s (expires in %ds)", svid.spiffe_id, ",".join(item.audiences),
                 self.cfg.cert_dir / item.file_name, int(remaining.total_seconds()))
        return remaining

    def write_jwt_bundle(self) -> None:
        bundles = self._client.fetch_jwt_bundles()
        write_public(self.cfg.cert_dir / self.cfg.jwt_bundle_file_name, jwt_bundle_file(bundles.jwt))

    # -- the consumer ----------------------------------------------------------------------

    def _start_child(self) -> None:
        argv = [self.cfg.cmd, *self.cfg.cmd_args]
        self._child = subprocess.Popen(argv)  # no shell; inherits stdout/stderr
        log.info("started %s (pid %d)", self.cfg.cmd, self._child.pid)

    def notify(self) -> None:
        """After an X.509 update: start ``cmd`` once, then signal it and the pid file's process."""
        with self._child_lock:
            if self.cfg.cmd:
                if self._child is None or self._child.poll() is not None:
                    if self._child is not None:
                        log.warning("%s exited with %s; starting it again", self.cfg.cmd, self._child.returncode)
                    self._start_child()
                elif self.cfg.renew_signal is not None:
                    self._child.send_signal(self.cfg.renew_signal)
        if self.cfg.pid_file_name is not None and self.cfg.renew_signal is not None and self._x509_writes:
            self._signal_pid_file(self.cfg.renew_signal)

    def _signal_pid_file(self, sig: signal.Signals) -> None:
        assert self.cfg.pid_file_name is not None
        delay = 0.1
        for attempt in range(PID_FILE_RETRIES):  # the process may be (re)writing its pid file
            try:
                pid = int(self.cfg.pid_file_name.read_text().strip())
                os.kill(pid, sig)
                return
            except (OSError, ValueError) as err:
                if attempt == PID_FILE_RETRIES - 1:
                    log.error("cannot signal the process in %s: %s", self.cfg.pid_file_name, err)
                    return
                self._stop.wait(delay)
                delay *= 2

    # -- loops -----------------------------------------------------------------------------

    def _x509_loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with self._stream_client.watch_x509_context() as watch:
                    self._watch = watch
                    for ctx in watch:
                        attempt = 0
                        self.write_x509(ctx)
                        self.notify()
                        if self._stop.is_set():
                            return
            except (SpiffeError, OSError) as err:
                if self._stop.is_set():
                    return
                delay = JWT_RETRY.delay(attempt, self._rng.random())
                attempt += 1
                log.warning("X.509 stream failed (%s); retrying in %.1f s", err, delay)
                self._stop.wait(delay)

    def _jwt_loop(self, item: JwtSvidFile) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                remaining = self.write_jwt(item)
                attempt = 0
                wait = max(remaining.total_seconds() / 2 + 1, 1.0) if remaining.total_seconds() > 2 else 1.0
                wait = min(wait, max(remaining.total_seconds() - 1, 0.5))
            except (SpiffeError, OSError) as err:
                wait = JWT_RETRY.delay(attempt, self._rng.random())
                attempt += 1
                log.warning("JWT-SVID for %s failed (%s); retrying in %.1f s", item.audiences[0], err, wait)
            self._stop.wait(wait)

    def _jwt_bundle_loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with self._stream_client.watch_jwt_bundles() as watch:
                    for bundles in watch:
                        attempt = 0
                        write_public(self.cfg.cert_dir / self.cfg.jwt_bundle_file_name, jwt_bundle_file(bundles.jwt))
            except (SpiffeError, OSError) as err:
                if self._stop.is_set():
                    return
                delay = JWT_RETRY.delay(attempt, self._rng.random())
                attempt += 1
                log.warning("JWT bundle stream failed (%s); retrying in %.1f s", err, delay)
                self._stop.wait(delay)

    # -- entry points ----------------------------------------------------------------------

    def run_once(self) -> None:
        """One-shot mode: X.509 files, JWT bundle, JWT-SVIDs; raises on the first error."""
        if self.cfg.cmd or self.cfg.renew_signal:
            log.warning("daemon_mode = false: cmd and renew_signal are ignored")
        if self.cfg.writes_x509:
            self.write_x509(self._client.fetch_x509_context())
        if self.cfg.jwt_bundle_file_name:
            self.write_jwt_bundle()
        for item in self.cfg.jwt_svids:
            self.write_jwt(item)

    def run_daemon(self) -> None:
        """Run until stop() (SIGTERM/SIGINT in the CLI)."""
        threads = []
        if self.cfg.writes_x509:
            threads.append(threading.Thread(target=self._x509_loop, name="helper-x509", daemon=True))
        if self.cfg.jwt_bundle_file_name:
            threads.append(threading.Thread(target=self._jwt_bundle_loop, name="helper-jwt-bundle", daemon=True))
        for item in self.cfg.jwt_svids:
            threads.append(threading.Thread(target=self._jwt_loop, args=(item,), name="helper-jwt", daemon=True))
        for t in threads:
            t.start()
        while not self._stop.wait(0.5):
            pass
        if self._watch is not None:
            self._watch.cancel()
        self._stop_child()

    def stop(self) -> None:
        self._stop.set()

    def _stop_child(self) -> None:
        with self._child_lock:
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def close(self) -> None:
        self._client.close()
        self._stream_client.close()


def main(config_path: Path, *, daemon_mode: bool | None = None) -> int:
    """``spiffe-agent helper``: 0 on a clean stop (or a one-shot success), 1 on an error."""
    from spiffe_agent.helper.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(config_path, daemon_mode=daemon_mode)
    helper = Helper(cfg)
    try:
        if not cfg.daemon_mode:
            helper.run_once()
            return 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: helper.stop())
        started = time.monotonic()
        helper.run_daemon()
        log.info("stopped after %.0f s", time.monotonic() - started)
        return 0
    finally:
        helper.close()
