"""Shared by the instance benchmarks (bench/boot-overhead.sh,
bench/concurrent-creates.sh, bench/large-lists.sh): a `vmcloud serve` in a
temp directory, a small HTTP client, a bare-QEMU boot of the test guest and
summary statistics. Standard library only."""

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "a long enough bench password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    # The profile scripts/lib.sh's build_vmcloud built.
    return os.path.join(target, os.environ.get("BENCH_PROFILE", "dist"), "vmcloud")


class Server:
    """`vmcloud serve` on a temp data dir; `extra_env` adds settings."""

    def __init__(self, extra_env=None, args=(), log_level="warn"):
        self.work = tempfile.mkdtemp(prefix="vmcloud-bench.")
        self.port = free_port()
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "VMCLOUD_BIND": f"127.0.0.1:{self.port}",
            "VMCLOUD_DATA_DIR": os.path.join(self.work, "data"),
            "VMCLOUD_LOG_LEVEL": log_level,
            "VMCLOUD_LOG_FORMAT": "json",
        }
        self.env.update(extra_env or {})
        self.log_path = os.path.join(self.work, "serve.log")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary(), "serve", *args], env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                status, _ = Api(self.port).request("GET", "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"vmcloud serve did not start; see {self.log_path}")
            time.sleep(0.05)

    def create_user(self, email, role):
        subprocess.run(
            [binary(), "admin", "create-user", "--email", email, "--role", role],
            input=PASSWORD + "\n",
            text=True,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.login(email)

    def login(self, email):
        api = Api(self.port)
        status, body = api.request(
            "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD}
        )
        assert status == 200, (status, body)
        api.token = body["access_token"]
        return api

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Api:
    """One keep-alive connection to the server."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            h = {"content-type": "application/json"}
            if self.token:
                h["authorization"] = f"Bearer {self.token}"
            h.update(headers or {})
            try:
                self.conn.request(
                    method, path, None if body is None else json.dumps(body), h
                )
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            return resp.status, (json.loads(data) if data else None)

    def ok(self, method, path, body=None, headers=None):
        status, data = self.request(method, path, body, headers)
        if status >= 300:
            raise SystemExit(f"{method} {path}: {status} {data}")
        return data


def ssh_key(work):
    path = os.path.join(work, "key")
    if not os.path.exists(path):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench@vmcloud", "-f", path],
            check=True,
        )
    with open(path + ".pub") as f:
        return f.read().strip()


def banner_at(port, timeout=300.0, every=0.02):
    """Monotonic time at which an SSH banner first arrives on 127.0.0.1:port.

    A new attempt starts every `every` seconds, each waiting up to 2 s for
    the banner, so a connection slirp holds while the guest is not up yet
    never delays the detection: this is the earliest moment the banner
    answers, give or take `every`."""
    found = threading.Event()
    at = []

    def attempt():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(2)
                data = b""
                while len(data) < 4:
                    chunk = s.recv(4 - len(data))
                    if not chunk:
                        return
                    data += chunk
                if data == b"SSH-" and not found.is_set():
                    at.append(time.monotonic())
                    found.set()
        except OSError:
            pass

    deadline = time.monotonic() + timeout
    while not found.wait(every):
        if time.monotonic() > deadline:
            raise SystemExit(f"no SSH banner on port {port} within {timeout}s")
        threading.Thread(target=attempt, daemon=True).start()
    return min(at)


def yaml_str(text):
    return json.dumps(text)


def bare_boot(base_image, public_key, vcpus, memory_mib, disk_gib, hostname):
    """Boots the guest with plain qemu-system-x86_64 and the arguments the
    platform's QEMU driver uses (crates/hypervisor/src/qemu/args.rs), with a
    seed holding the same files (crates/hypervisor/src/cloud_init.rs).
    Returns (seconds from spawning QEMU to the SSH banner, seconds spent
    making the overlay and seed)."""
    vm = uuid.uuid4()
    d = tempfile.mkdtemp(prefix="vmcloud-bare.")
    port = free_port()
    mac = "52:54:00:%02x:%02x:%02x" % tuple(vm.bytes[-3:])
    prep_start = time.monotonic()
    files = {
        "meta-data": f"instance-id: {yaml_str(str(vm))}\nlocal-hostname: {yaml_str(hostname)}\n",
        "user-data": f"#cloud-config\nhostname: {yaml_str(hostname)}\n"
        f"ssh_authorized_keys:\n  - {yaml_str(public_key)}\n",
        "network-config": "version: 2\nethernets:\n  primary:\n    match:\n"
        f"      macaddress: {yaml_str(mac)}\n    dhcp4: true\n",
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    seed = os.path.join(d, "seed.img")
    with open(seed, "wb") as f:
        f.truncate(1024 * 1024)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    env["PATH"] = env["PATH"] + ":/usr/sbin:/sbin"
    subprocess.run(["mkfs.vfat", "-n", "cidata", seed], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["mcopy", "-i", seed] + [os.path.join(d, n) for n in files] + ["::/"],
                   check=True, env=env)
    disk = os.path.join(d, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    os.path.abspath(base_image), disk, f"{disk_gib}G"], check=True)
    with open(os.path.join(d, "sercon-port.bin"), "wb") as f:
        f.write((0x3F8).to_bytes(2, "little"))
    prep = time.monotonic() - prep_start
    args = [
        "qemu-system-x86_64",
        "-name", f"guest={vm},debug-threads=on", "-uuid", str(vm),
        "-machine", "q35", "-accel", "tcg", "-cpu", "max",
        "-smp", str(vcpus), "-m", f"{memory_mib}M",
        "-display", "none", "-vnc", f"unix:{d}/vnc.sock", "-device", "VGA",
        "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0",
        "-device", "virtio-rng-pci",
        "-chardev", f"socket,id=qmp,path={d}/qmp.sock,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=serial0,path={d}/serial.sock,server=on,wait=off,"
        f"logfile={d}/serial.log,logappend=on",
        "-serial", "chardev:serial0",
        "-fw_cfg", f"name=etc/sercon-port,file={d}/sercon-port.bin",
        "-drive", f"if=none,id=disk0,file={disk},format=qcow2,discard=unmap",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
        "-drive", f"if=none,id=seed,file={seed},format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=seed",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac},romfile=",
        "-pidfile", f"{d}/qemu.pid", "-nodefaults", "-no-user-config", "-daemonize",
    ]
    start = time.monotonic()
    subprocess.run(args, check=True, stderr=subprocess.DEVNULL)
    pid = int(open(f"{d}/qemu.pid").read().strip())
    try:
        ready = banner_at(port)
    finally:
        os.kill(pid, signal.SIGKILL)
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.02)
        subprocess.run(["rm", "-rf", d])
    return ready - start, prep


def summary(values, unit="s", scale=1.0, digits=2):
    v = sorted(x * scale for x in values)
    med = statistics.median(v)
    fmt = f"{{:.{digits}f}}"
    return (f"median {fmt.format(med)} {unit}, min {fmt.format(v[0])}, "
            f"max {fmt.format(v[-1])} (n={len(v)})")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def qemu_pids():
    out = subprocess.run(["pgrep", "-x", "qemu-system-x86"], capture_output=True, text=True)
    pids = set(out.stdout.split())
    out = subprocess.run(["pgrep", "-f", "^qemu-system-x86_64"], capture_output=True, text=True)
    return pids | set(out.stdout.split())
