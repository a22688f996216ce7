"""Static checks of the Docker deployment in deploy/.

No Docker engine runs on our machines or in CI, so deploy/Dockerfile and the compose files cannot be built or
started here. These tests check them against what can be known here instead: the Makefile and CI script they
must match, the settings the server reads (.env.example), and the shared libraries the current build of the
server links (ldd, readelf, dpkg). Run with /usr/bin/python3 -m pytest (Debian's python3-yaml, python3-pytest).

PETCAM_BIN: the petcam binary whose libraries the runtime stage must provide (default build/release/petcam).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_GPU = DEPLOY / "docker-compose.gpu.yml"
DOCKERFILE_GPU = DEPLOY / "Dockerfile.gpu"
README = DEPLOY / "README.md"

DEBIAN_12 = re.compile(r"^debian:(12|bookworm)(-slim)?(@sha256:[0-9a-f]{64})?$")
DEBIAN_12_RUNTIME = re.compile(r"^debian:(12-slim|bookworm|bookworm-slim)(@sha256:[0-9a-f]{64})?$")
SANITIZER_RUNTIME = re.compile(r"^lib(asan|ubsan|lsan|tsan|hwasan)\.so")
APP_SERVICES = ("api", "worker")


# --- Dockerfile ------------------------------------------------------------------------------------------


def parse_dockerfile(path):
    """[(stage name or None, base image, [(INSTRUCTION, args)])]; continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") and (current or not line[1:].lstrip().startswith("syntax=")):
            continue  # a comment, also inside a continued instruction (Docker drops those too)
        if not line and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"

    stages = []
    for entry in logical:
        instr, _, args = entry.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"name": name, "image": words[0], "instructions": []})
        elif not stages and instr == "ARG":
            continue  # a global ARG, for the FROM lines (Dockerfile.gpu's base images)
        else:
            assert stages, f"{instr} before the first FROM"
            stages[-1]["instructions"].append((instr, args.strip()))
    return stages


def shell_commands(run_args):
    """The simple commands of a RUN line, as token lists (split on &&, ||, ;)."""
    out = []
    for part in re.split(r"&&|\|\||;", run_args):
        try:
            tokens = shlex.split(part)
        except ValueError:
            tokens = part.split()
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
            tokens = tokens[1:]  # VAR=value prefixes
        if tokens:
            out.append(tokens)
    return out


def instructions(stage, name):
    return [args for instr, args in stage["instructions"] if instr == name]


def exec_form(args):
    value = json.loads(args)
    assert isinstance(value, list), f"expected the JSON (exec) form, got {args}"
    return value


def env_of(stage):
    env = {}
    for args in instructions(stage, "ENV"):
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy form: ENV NAME value
            env[words[0]] = " ".join(words[1:])
            continue
        for w in words:
            k, _, v = w.partition("=")
            env[k] = v
    return env


def runtime_packages(stage):
    """Packages of the runtime stage's `apt-get install` lines, and the options used there."""
    packages, options = [], set()
    for args in instructions(stage, "RUN"):
        for cmd in shell_commands(args):
            if cmd[0] in ("apt-get", "apt") and "install" in cmd:
                rest = cmd[cmd.index("install") + 1 :]
                options.update(w for w in rest if w.startswith("-"))
                packages += [w for w in rest if not w.startswith("-")]
    return packages, options


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def build_stage(stages):
    return stages[0]


@pytest.fixture(scope="module")
def runtime_stage(stages):
    return stages[-1]


def test_two_stages_on_debian_12(stages):
    assert len(stages) == 2, [s["image"] for s in stages]
    for s in stages:
        assert DEBIAN_12.match(s["image"]), f"FROM {s['image']}: expected Debian 12 (debian:12[-slim], bookworm)"
    assert DEBIAN_12_RUNTIME.match(stages[-1]["image"]), f"runtime stage FROM {stages[-1]['image']}"
    assert stages[0]["name"], "the build stage needs a name for COPY --from"


def test_ci_builds_through_setup_sh():
    """What the build stage must repeat: .ci/run -> make test -> build -> setup -> scripts/setup.sh."""
    ci = [shlex.split(l) for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ["make", "test"] in ci, ".ci/run no longer runs `make test`: update deploy/Dockerfile to build as CI does"

    rules, target = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-/ ]+):(?![=:])\s*(.*)$", line)
        if m and not line.startswith("\t"):
            for t in m.group(1).split():
                rules.setdefault(t, {"prereqs": [], "recipe": []})["prereqs"] += m.group(2).split()
            target = m.group(1).split()
        elif line.startswith("\t") and target:
            for t in target:
                rules[t]["recipe"].append(line.strip())
        elif line.strip() and not line.startswith("\t"):
            target = None

    def closure(t, seen=None):
        seen = seen if seen is not None else set()
        if t in seen or t not in rules:
            return seen
        seen.add(t)
        for p in rules[t]["prereqs"]:
            closure(p, seen)
        return seen

    assert "build" in closure("test"), "make test no longer depends on make build"
    recipes = [shlex.split(r) for t in closure("build") for r in rules[t]["recipe"]]
    assert any(r and r[0] == "scripts/setup.sh" for r in recipes), "make build no longer runs scripts/setup.sh"


def test_build_stage_runs_setup_sh_then_make_build(build_stage):
    steps = build_stage["instructions"]
    setup_at = make_at = copy_scripts_at = None
    for i, (instr, args) in enumerate(steps):
        if instr == "COPY" and copy_scripts_at is None and re.match(r"^(scripts/?|\.)\s", args + " "):
            copy_scripts_at = i
        if instr != "RUN":
            continue
        for cmd in shell_commands(args):
            if cmd[0] in ("scripts/setup.sh", "./scripts/setup.sh") and setup_at is None:
                setup_at = i
            if cmd[0] == "make" and "build" in cmd[1:] and make_at is None:
                make_at = i
    assert copy_scripts_at is not None, "the build stage does not copy scripts/ before running setup.sh"
    assert setup_at is not None, "the build stage does not run scripts/setup.sh (the script CI runs)"
    assert make_at is not None, "the build stage does not run `make build`"
    assert copy_scripts_at < setup_at < make_at
    copy_all = [i for i, (instr, args) in enumerate(steps) if instr == "COPY" and args.split()[0] == "."]
    assert copy_all and copy_all[0] < make_at, "the repository is not copied before `make build`"


def test_runtime_stage_layout(build_stage, runtime_stage):
    env = env_of(runtime_stage)
    assert env.get("DATA_DIR") == "/data"
    assert env.get("MODELS_DIR") == "/app/models"
    assert env.get("WEB_DIR") == "/app/web"
    assert env.get("HOST") == "0.0.0.0"
    assert env.get("PORT") == "8000"
    unknown = set(env) - known_settings()
    assert not unknown, f"ENV sets names the server does not read: {sorted(unknown)}"

    entrypoint = instructions(runtime_stage, "ENTRYPOINT")
    assert len(entrypoint) == 1 and exec_form(entrypoint[0]) == ["/app/petcam"]
    cmd = instructions(runtime_stage, "CMD")
    assert cmd and exec_form(cmd[-1]) == ["serve"]

    copies = {}
    for args in instructions(runtime_stage, "COPY"):
        words = args.split()
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        if f"--from={build_stage['name']}" in flags:
            for src in paths[:-1]:
                copies[src.rstrip("/")] = paths[-1].rstrip("/")
    binary = [dst for src, dst in copies.items() if src.endswith("/build/release/petcam")]
    assert binary == ["/app/petcam"], f"the release binary is not copied to the entrypoint: {copies}"
    assert any(src.endswith("/models") and dst == env["MODELS_DIR"] for src, dst in copies.items()), copies
    assert any(src.endswith("/web") and dst == env["WEB_DIR"] for src, dst in copies.items()), copies

    workdir = instructions(runtime_stage, "WORKDIR")
    assert workdir and workdir[-1] == "/app"


def test_runtime_stage_runs_as_petcam_uid_10001(runtime_stage):
    users = instructions(runtime_stage, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"
    cmds = [c for args in instructions(runtime_stage, "RUN") for c in shell_commands(args)]
    useradd = [c for c in cmds if c[0] == "useradd" and c[-1] == user]
    assert useradd or user == "10001", f"USER {user} is not created with useradd"
    if useradd:
        argv = useradd[0]
        uid = argv[argv.index("--uid") + 1] if "--uid" in argv else argv[argv.index("-u") + 1]
        assert uid == "10001"
    chown = [c for c in cmds if c[0] == "chown" and any(a.startswith("/data") for a in c)]
    assert chown and any(a.split(":")[0] in (user, "10001") for a in chown[0][1:]), "/data is not owned by the user"


def test_runtime_stage_exposes_and_checks_health(runtime_stage):
    exposed = [p.split("/")[0] for args in instructions(runtime_stage, "EXPOSE") for p in args.split()]
    assert "8000" in exposed
    checks = instructions(runtime_stage, "HEALTHCHECK")
    assert len(checks) == 1 and checks[0].upper() != "NONE"
    assert "CMD" in checks[0].split() and "curl" in checks[0] and "/health" in checks[0]


def test_runtime_apt_line(runtime_stage):
    packages, options = runtime_packages(runtime_stage)
    assert packages, "the runtime stage installs no packages"
    assert "--no-install-recommends" in options
    assert {"ca-certificates", "curl"} <= set(packages)
    dev = [p for p in packages if p.endswith("-dev") or "-dev:" in p]
    assert not dev, f"-dev packages in the runtime stage: {dev}"
    assert len(packages) == len(set(packages)), "a package is listed twice"
    if not shutil.which("dpkg-query"):
        pytest.skip("dpkg-query is not available: not a Debian machine")
    unknown = []
    for p in packages:
        known = subprocess.run(["dpkg-query", "-W", p], capture_output=True).returncode == 0 or (
            shutil.which("apt-cache")
            and subprocess.run(["apt-cache", "show", p], capture_output=True).returncode == 0
        )
        if not known:
            unknown.append(p)
    assert not unknown, f"packages neither installed here nor known to apt: {unknown}"


# --- the libraries of the current build ------------------------------------------------------------------


def petcam_bin():
    return Path(os.environ.get("PETCAM_BIN", ROOT / "build" / "release" / "petcam"))


def installed_packages():
    """{package: {"base": bool, "deps": [[alternatives]], "provides": [names]}} from dpkg's database."""
    fmt = "${Package}\t${db:Status-Abbrev}\t${Essential}\t${Priority}\t${Provides}\t${Depends}\t${Pre-Depends}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True).stdout

    def names(field):
        groups = []
        for group in field.split(","):
            alts = [re.sub(r"\(.*?\)|:\w+", "", a).strip() for a in group.split("|")]
            alts = [a for a in alts if a]
            if alts:
                groups.append(alts)
        return groups

    pkgs = {}
    for line in out.splitlines():
        name, status, essential, priority, provides, depends, predepends = (line.split("\t") + [""] * 7)[:7]
        if not status.startswith("ii"):
            continue
        entry = pkgs.setdefault(name, {"base": False, "deps": [], "provides": []})
        entry["base"] |= essential == "yes" or priority == "required"
        entry["deps"] += names(depends) + names(predepends)
        entry["provides"] += [a for g in names(provides) for a in g]
    return pkgs


def dependency_closure(roots, pkgs):
    """Installed packages that `roots` bring in through Depends/Pre-Depends (every installed alternative)."""
    providers = {}
    for name, p in pkgs.items():
        for v in p["provides"]:
            providers.setdefault(v, set()).add(name)
    seen, todo = set(), [r for r in roots if r in pkgs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for group in pkgs[name]["deps"]:
            for alt in group:
                todo += [alt] if alt in pkgs else []
                todo += sorted(providers.get(alt, ()))
    return seen


def ldd(binary):
    """{soname: resolved path or None}."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = {}
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"^(\S+)\s+=>\s+(not found|\S+)", line)
        if m:
            libs[m.group(1)] = None if m.group(2) == "not found" else m.group(2)
            continue
        m = re.match(r"^(/\S+)\s+\(0x", line)  # the dynamic loader
        if m:
            libs[os.path.basename(m.group(1))] = m.group(1)
    return libs


def needed(binary):
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def owning_packages(paths):
    """{path: package} through dpkg -S, trying the path as given, resolved, and with/without /usr (merged /usr)."""
    def variants(p):
        out = []
        for q in (p, os.path.realpath(p)):
            out.append(q)
            out.append(q[4:] if q.startswith("/usr/") else "/usr" + q)
        return list(dict.fromkeys(out))

    candidates = {p: variants(p) for p in paths}
    everything = sorted({v for vs in candidates.values() for v in vs})
    res = subprocess.run(["dpkg", "-S", *everything], capture_output=True, text=True)
    owner = {}
    for line in res.stdout.splitlines():
        if line.startswith("diversion ") or ": " not in line:
            continue
        pkg, path = line.split(": ", 1)
        owner[path.strip()] = pkg.split(",")[0].split(":")[0].strip()
    return {p: next((owner[v] for v in vs if v in owner), None) for p, vs in candidates.items()}


@pytest.fixture(scope="module")
def binary_libraries():
    binary = petcam_bin()
    if not binary.is_file():
        pytest.skip(f"{binary} is missing (build it, or set PETCAM_BIN): cannot check the runtime libraries")
    for tool in ("ldd", "readelf", "dpkg", "dpkg-query"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not available: cannot map libraries to Debian packages")
    libs = ldd(binary)
    missing = sorted(n for n, p in libs.items() if p is None)
    assert not missing, f"{binary} does not load here either: {missing} not found"
    libs = {n: p for n, p in libs.items() if not SANITIZER_RUNTIME.match(n)}  # the image ships the release build
    outside = sorted(p for p in libs.values() if not re.match(r"^/(usr/)?lib(64)?/", p))
    assert not outside, f"libraries outside /lib and /usr/lib cannot come from apt: {outside}"
    owners = owning_packages(libs.values())
    unowned = sorted(p for p, pkg in owners.items() if pkg is None)
    assert not unowned, f"no Debian package owns {unowned}"
    direct = [n for n in needed(binary) if not SANITIZER_RUNTIME.match(n)]
    return {
        "binary": binary,
        "package_of": {n: owners[p] for n, p in libs.items()},
        "direct": direct,
    }


def test_runtime_stage_names_every_directly_linked_library(runtime_stage, binary_libraries):
    """Each NEEDED entry of the binary: its package is named in the runtime apt line."""
    named = set(runtime_packages(runtime_stage)[0])
    package_of = binary_libraries["package_of"]
    absent = sorted({f"{package_of[n]} ({n})" for n in binary_libraries["direct"] if package_of[n] not in named})
    assert not absent, (
        f"{binary_libraries['binary']} links libraries whose packages deploy/Dockerfile's runtime stage does not "
        f"install: {absent}"
    )


def test_runtime_stage_brings_every_loaded_library(runtime_stage, binary_libraries):
    """Every library ldd resolves: its package comes with the named ones (Depends) or with debian:12-slim."""
    pkgs = installed_packages()
    named = set(runtime_packages(runtime_stage)[0])
    base = {n for n, p in pkgs.items() if p["base"]} | {"apt"}
    available = dependency_closure(named | base, pkgs)
    absent = sorted(
        {f"{pkg} ({lib})" for lib, pkg in binary_libraries["package_of"].items() if pkg not in available}
    )
    assert not absent, f"the runtime image would lack: {absent}"


def setup_packages():
    """The package names in scripts/setup.sh's PACKAGES=( ... ) list."""
    text = (ROOT / "scripts" / "setup.sh").read_text()
    body = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M).group(1)
    return [w for line in body.splitlines() for w in line.split("#", 1)[0].split()]


def libraries_of_dev_packages():
    """The library packages that setup.sh's -dev packages depend on (apt-cache depends), e.g. libwebp7 for
    libwebp-dev: the runtime stage may name one before the server links it, so that a branch adding the
    library to the code and one adding it to the image merge into a working image."""
    dev = [p for p in setup_packages() if p.endswith("-dev")]
    if not shutil.which("apt-cache"):
        return set()
    out = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", *dev],
                         capture_output=True, text=True).stdout
    return {m for m in re.findall(r"^\s+Depends:\s+(\S+)", out, re.M) if not m.endswith("-dev") and not m.startswith("<")}


def test_runtime_stage_installs_nothing_stale(runtime_stage, binary_libraries):
    """Every named library package is still linked directly (or is the library of a -dev package setup.sh
    installs for the build, or part of the base image): the list stays the derived one."""
    package_of = binary_libraries["package_of"]
    direct = {package_of[n] for n in binary_libraries["direct"]}
    named = set(runtime_packages(runtime_stage)[0]) - {"ca-certificates", "curl"}
    base = {n for n, p in installed_packages().items() if p["base"]}  # in debian:12-slim anyway, e.g. zlib1g
    stale = sorted(named - direct - libraries_of_dev_packages() - base)
    assert not stale, f"named in the runtime stage but not linked by {binary_libraries['binary']}: {stale}"


# --- compose files ----------------------------------------------------------------------------------------


def known_settings():
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    assert {"SECRET_KEY", "DATABASE_URL", "STORAGE_DIR", "INSTANCE_ID"} <= names, "cannot read .env.example"
    return names | {"ROLE", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


class MissingVariable(Exception):
    pass


def interpolate(value, env):
    """Compose's ${...} interpolation: ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, $V, and $$ for a literal $."""
    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        v = env.get(name)
        if op in (":-", "-"):
            return v if (v if op == ":-" else v is not None) else arg
        if op in (":?", "?"):
            if not (v if op == ":?" else v is not None):
                raise MissingVariable(f"{name}: {arg}")
            return v
        return v or ""

    pattern = r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
    return re.sub(pattern, one, value) if isinstance(value, str) else value


def interpolated_names(path):
    text = "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#"))
    text = text.replace("$$", "")
    return set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))


def environment(service, env=None):
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {k: interpolate(v, env) if env is not None else v for k, v in raw.items()}


def named_volumes(service):
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type", "volume") == "volume" and v.get("source"):
                out.append((v["source"], v["target"]))
        else:
            src, _, rest = v.partition(":")
            if rest and not src.startswith((".", "/", "~", "$")):
                out.append((src, rest.split(":")[0]))
    return out


def command(service):
    c = service.get("command")
    return shlex.split(c) if isinstance(c, str) else list(c or [])


def role(service):
    argv = command(service)
    for i, a in enumerate(argv):
        if a == "--role" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--role="):
            return a.split("=", 1)[1]
    return None


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_gpu():
    return yaml.safe_load(COMPOSE_GPU.read_text())


@pytest.fixture(scope="module")
def merged(compose, compose_gpu):
    """The base file with the GPU override on top (it only adds services and volumes)."""
    clash = set(compose_gpu.get("services", {})) & set(compose["services"])
    assert not clash, f"the GPU file redefines {clash}: extend this merge"
    return {
        "services": {**compose["services"], **compose_gpu.get("services", {})},
        "volumes": {**(compose.get("volumes") or {}), **(compose_gpu.get("volumes") or {})},
    }


def app_services(doc):
    return {n: s for n, s in doc["services"].items() if s.get("build") or str(s.get("image", "")).startswith("petcam")}


def test_compose_services(compose):
    assert {"db", "api", "worker"} <= set(compose["services"])
    assert set(app_services(compose)) == set(APP_SERVICES)


@pytest.mark.parametrize("which", ["base", "with-gpu"])
def test_volumes_are_declared(which, compose, merged):
    doc = compose if which == "base" else merged
    declared = set(doc.get("volumes") or {})
    for name, service in doc["services"].items():
        for vol, _ in named_volumes(service):
            assert vol in declared, f"{name} uses volume {vol!r}, not declared under volumes:"
    assert {"pgdata", "storage"} <= declared


def is_gpu_service(service):
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return any(d.get("driver") == "nvidia" for d in devices)


@pytest.mark.parametrize("which", ["base", "with-gpu"])
def test_app_services_share_one_build(which, compose, merged):
    doc = compose if which == "base" else merged
    apps = {n: s for n, s in app_services(doc).items() if not is_gpu_service(s)}  # GPU ones: Dockerfile.gpu
    builds = {json.dumps(s.get("build"), sort_keys=True) for s in apps.values()}
    images = {s.get("image") for s in apps.values()}
    assert len(builds) == 1 and len(images) == 1, f"api and workers must run one image: {builds} {images}"
    build = next(iter(apps.values()))["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT, f"build context {build['context']} is not the repository root"
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_roles(compose, compose_gpu):
    assert role(compose["services"]["api"]) == "api"
    assert role(compose["services"]["worker"]) == "worker"
    for name, service in compose_gpu["services"].items():
        assert role(service) == "worker", f"{name} runs {command(service)}"
    for service in app_services(compose).values():
        assert command(service)[0] == "serve"


def test_db_is_postgres_with_a_healthcheck(compose):
    db = compose["services"]["db"]
    assert str(db["image"]).startswith("postgres:15")
    test = db["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    assert ("pgdata", "/var/lib/postgresql/data") in named_volumes(db)
    assert "ports" not in db, "PostgreSQL is for the app services, not the host"


@pytest.mark.parametrize("which", ["base", "with-gpu"])
def test_app_services_wait_for_a_healthy_db(which, compose, merged):
    doc = compose if which == "base" else merged
    for name, service in app_services(doc).items():
        deps = service.get("depends_on")
        assert isinstance(deps, dict) and deps.get("db", {}).get("condition") == "service_healthy", name
        assert service.get("restart") == "unless-stopped", name


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_only_known_settings(path):
    doc = yaml.safe_load(path.read_text())
    known = known_settings()
    for name, service in doc["services"].items():
        unknown = set(environment(service)) - known
        assert not unknown, f"{path.name}: {name} sets {sorted(unknown)}, which the server does not read"
    unknown = interpolated_names(path) - known
    assert not unknown, f"{path.name} interpolates {sorted(unknown)}: not in .env.example"


@pytest.mark.parametrize("which", ["base", "with-gpu"])
def test_secret_key_and_database_are_wired(which, compose, merged):
    doc = compose if which == "base" else merged
    env = {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "POSTGRES_DB": "d", "SECRET_KEY": "k" * 64}
    db = environment(doc["services"]["db"], env)
    assert (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"]) == ("u", "p", "d")
    defaults = environment(doc["services"]["db"], {"POSTGRES_PASSWORD": "p"})
    for name, service in app_services(doc).items():
        files = service.get("env_file")
        files = [files] if isinstance(files, str) else [f if isinstance(f, str) else f["path"] for f in files or []]
        assert (DEPLOY / "../.env").resolve() in [(DEPLOY / f).resolve() for f in files], f"{name}: no env_file ../.env"
        e = environment(service, env)
        assert e["SECRET_KEY"] == env["SECRET_KEY"], f"{name}: SECRET_KEY does not come from .env"
        assert e["DATABASE_URL"] == "postgresql://u:p@db:5432/d", f"{name}: DATABASE_URL is {e['DATABASE_URL']}"
        # With POSTGRES_USER/DB left out, the app's defaults are the database's.
        d = environment(service, {"POSTGRES_PASSWORD": "p", "SECRET_KEY": "k" * 64})
        assert d["DATABASE_URL"] == (
            f"postgresql://{defaults['POSTGRES_USER']}:p@db:5432/{defaults['POSTGRES_DB']}"
        ), f"{name}: DATABASE_URL's defaults differ from the db service's"
        # Without a key, compose must refuse rather than let each replica generate its own.
        with pytest.raises(MissingVariable):
            environment(service, {"POSTGRES_PASSWORD": "p"})


@pytest.mark.parametrize("which", ["base", "with-gpu"])
def test_app_services_share_storage(which, compose, merged):
    doc = compose if which == "base" else merged
    image_env = env_of(parse_dockerfile(DOCKERFILE)[-1])
    for name, service in app_services(doc).items():
        e = {**image_env, **environment(service, {"POSTGRES_PASSWORD": "p", "SECRET_KEY": "k"})}
        storage_dir = e.get("STORAGE_DIR") or f"{e['DATA_DIR']}/storage"
        assert ("storage", storage_dir) in named_volumes(service), f"{name}: storage volume not at {storage_dir}"


def test_api_is_published_and_health_checked(compose):
    api = compose["services"]["api"]
    port = environment(api, {"POSTGRES_PASSWORD": "p", "SECRET_KEY": "k"}).get("PORT", "8000")
    assert any(str(p).split(":")[-1] == str(port) for p in api.get("ports", [])), api.get("ports")
    hc = api.get("healthcheck")
    if hc is not None:  # else the image's HEALTHCHECK applies
        assert not hc.get("disable") and "/health" in " ".join(hc["test"] if isinstance(hc["test"], list) else [hc["test"]])


@pytest.mark.parametrize("which", ["base", "with-gpu"])
def test_workers_scale(which, compose, merged):
    doc = compose if which == "base" else merged
    workers = {n: s for n, s in app_services(doc).items() if role(s) == "worker"}
    assert workers
    for name, w in workers.items():
        assert not w.get("ports"), f"{name}: a worker serves no HTTP and must not take a host port (--scale)"
        assert "container_name" not in w and "hostname" not in w, f"{name}: replicas need distinct host names"
        instance = environment(w, {"POSTGRES_PASSWORD": "p", "SECRET_KEY": "k"}).get("INSTANCE_ID")
        assert not instance, f"{name}: INSTANCE_ID={instance} would be shared by every replica"
        # Without its own healthcheck a worker inherits the image's curl of /health, which cannot pass.
        hc = w.get("healthcheck")
        assert hc, f"{name}: no healthcheck, so the image's HTTP one applies and the worker reads unhealthy"
        assert hc.get("disable") is True or (hc.get("test") and "/health" not in json.dumps(hc["test"])), (
            f"{name}: the image's HTTP healthcheck cannot pass in a worker"
        )


GPU_ENV = {"POSTGRES_PASSWORD": "p", "SECRET_KEY": "k", "LIBTORCH_URL": "u", "LIBTORCH_SHA256": "s",
           "CUDA_KEYRING_SHA256": "c"}


def test_gpu_worker(compose_gpu, compose):
    services = compose_gpu["services"]
    assert services, "the GPU file defines no service"
    base_images = {s.get("image") for s in app_services(compose).values()}
    for name, service in services.items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
        env = environment(service, GPU_ENV)
        assert env.get("MODEL") == "x4plus"
        assert env.get("DEVICE") == "cuda", f"{name}: a GPU worker must ask for CUDA (and fail without it)"
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE_GPU
        assert set(build.get("args", {})) >= {"LIBTORCH_URL", "LIBTORCH_SHA256"}, build
        # Its image must not be the CPU image's name, or one build would overwrite the other.
        assert service.get("image") not in base_images, service.get("image")
    header = COMPOSE_GPU.read_text().split("services:", 1)[0]
    assert "DOES NOT USE THE GPU" not in header.upper()
    assert "Dockerfile.gpu" in header


@pytest.fixture(scope="module")
def gpu_stages():
    return parse_dockerfile(DOCKERFILE_GPU)


def test_gpu_dockerfile_stages(gpu_stages):
    assert [s["name"] for s in gpu_stages] == ["build", "runtime"]
    text = DOCKERFILE_GPU.read_text()
    # The base images are build arguments with Debian 12 defaults (the server links Debian 12's libraries).
    defaults = dict(re.findall(r"^ARG (BUILD_IMAGE|RUNTIME_IMAGE)=(\S+)$", text, re.M))
    assert DEBIAN_12.match(defaults["BUILD_IMAGE"]) and DEBIAN_12_RUNTIME.match(defaults["RUNTIME_IMAGE"]), defaults
    assert gpu_stages[0]["image"] == "${BUILD_IMAGE}" and gpu_stages[1]["image"] == "${RUNTIME_IMAGE}"


def test_gpu_dockerfile_verifies_the_cuda_libtorch(gpu_stages):
    build = gpu_stages[0]
    args = [a for i, a in build["instructions"] if i == "ARG"]
    assert "LIBTORCH_URL" in args and "LIBTORCH_SHA256" in args, args
    runs = instructions(build, "RUN")
    fetch = next(r for r in runs if '"${LIBTORCH_URL}"' in r)
    # Downloaded, checked against the pinned hash, and only then unpacked.
    assert fetch.index("curl") < fetch.index("sha256sum -c") < fetch.index("unzip"), fetch
    assert "${LIBTORCH_SHA256}" in fetch.split("sha256sum -c")[0]
    assert "libtorch_cuda.so" in fetch, "a CPU-only archive must fail the build"
    configure = [c for r in runs for c in shell_commands(r) if c[:2] == ["cmake", "-S"]]
    assert configure and "-DTorch_DIR=/opt/libtorch/share/cmake/Torch" in configure[0], configure


def test_gpu_runtime_stage(gpu_stages):
    runtime = gpu_stages[1]
    env = env_of(runtime)
    assert env.get("NVIDIA_VISIBLE_DEVICES") and "compute" in env.get("NVIDIA_DRIVER_CAPABILITIES", ""), env
    assert env.get("DEVICE") == "cuda"
    assert "/opt/libtorch/lib" in env.get("LD_LIBRARY_PATH", "")
    copies = [a for i, a in runtime["instructions"] if i == "COPY"]
    assert any("/opt/libtorch/lib/" in c and "--from=build" in c for c in copies), copies
    assert any("/app/petcam" in c for c in copies), copies
    assert "libtorch1.13" not in runtime_packages(runtime)[0], "Debian's CPU libtorch has no place here"
    assert [a for i, a in runtime["instructions"] if i == "USER"] == ["petcam"]
    assert exec_form([a for i, a in runtime["instructions"] if i == "ENTRYPOINT"][-1]) == ["/app/petcam"]


# --- build context ----------------------------------------------------------------------------------------


def ignore_patterns(text):
    return [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


def ignored(path, patterns):
    """Docker's .dockerignore matching (filepath.Match per segment plus **), last match wins."""
    def regex(p):
        out = []
        for seg in p.strip("/").split("/"):
            if seg == "**":
                out.append(r"(?:.*/)?")
                continue
            s = re.escape(seg).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            out.append(s + "/")
        return re.compile("^" + "".join(out).rstrip("/") + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for p in patterns:
        negate = p.startswith("!")
        r = regex(p[1:] if negate else p)
        if any(r.match(q) for q in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_what_the_build_needs():
    patterns = ignore_patterns(DOCKERIGNORE.read_text())
    for excluded in (".git", "build/release/petcam", ".env", "data/petcam.db", "data/secret_key", ".setup-stamp"):
        assert ignored(excluded, patterns), f"{excluded} would be sent to the builder"
    for needed_path in ("CMakeLists.txt", "Makefile", "scripts/setup.sh", "src/main.cpp", "tests/CMakeLists.txt",
                        "bench/CMakeLists.txt", "cmake/Embed.cmake", "migrations/postgres/0001_init.up.sql",
                        "web/docs.html", "web/redoc.html", "src/api/openapi.json"):
        assert (ROOT / needed_path).exists(), f"{needed_path} moved: update this list"
        assert not ignored(needed_path, patterns), f"{needed_path} is needed by the build but ignored"


def test_readme_gives_the_same_ignore_list():
    text = README.read_text()
    section = text.split("## Build context ignore file", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    assert ignore_patterns(block) == ignore_patterns(DOCKERIGNORE.read_text())


def test_root_dockerignore_is_the_same_list():
    """The legacy builder (Docker 20.10's default, Compose 1.29's) reads only <context>/.dockerignore."""
    root = ROOT / ".dockerignore"
    assert root.exists(), "no .dockerignore at the repository root: the legacy builder would send build/ and .env"
    assert ignore_patterns(root.read_text()) == ignore_patterns(DOCKERIGNORE.read_text())


# --- the build stage's setup and the Compose versions ------------------------------------------------------


def test_build_stage_installs_build_packages_only(build_stage):
    """The build stage runs setup.sh with PETCAM_SETUP=build; that mode keeps everything compiling needs."""
    assert env_of(build_stage).get("PETCAM_SETUP") == "build", "the build stage would install the test packages"
    text = (ROOT / "scripts" / "setup.sh").read_text()
    test_only = re.search(r"^TEST_ONLY=\((.*?)^\)", text, re.S | re.M).group(1)
    test_only = {w for line in test_only.splitlines() for w in line.split("#", 1)[0].split()}
    needed_for_build = [p for p in setup_packages() if p.endswith("-dev") or p in ("cmake", "g++", "make", "pkg-config",
                                                                                   "openssl", "ca-certificates")]
    assert not test_only & set(needed_for_build), f"PETCAM_SETUP=build would leave out {test_only & set(needed_for_build)}"
    assert test_only <= set(setup_packages()), f"TEST_ONLY names packages setup.sh does not install: {test_only - set(setup_packages())}"


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU, ROOT / "tests" / "docker" / "docker-compose.test.yml"],
                         ids=lambda p: p.name)
def test_compose_files_read_by_compose_1_29(path):
    """Debian 12's docker-compose 1.29 rejects the top-level `name:` key (v2 only); both read the rest."""
    doc = yaml.safe_load(path.read_text())
    assert "name" not in doc, f"{path.name}: top-level name: is Compose v2 only (use -p or COMPOSE_PROJECT_NAME)"
    assert "version" not in doc, f"{path.name}: no version key (the Compose spec format, read by 1.29 and v2)"


@pytest.mark.parametrize("extra", [[], [COMPOSE_GPU], [ROOT / "tests" / "docker" / "docker-compose.test.yml"]],
                         ids=["base", "with-gpu", "with-test-override"])
def test_docker_compose_config_accepts_the_files(extra, tmp_path):
    """`docker-compose config` (1.29) when it is installed: the files parse and merge as Compose reads them."""
    exe = shutil.which("docker-compose")
    if not exe:
        pytest.skip("docker-compose is not installed")
    env = tmp_path / "env"
    # The GPU file needs its CUDA libtorch named (it is only read here, never fetched).
    env.write_text("SECRET_KEY=k\nPOSTGRES_PASSWORD=p\nLIBTORCH_URL=https://libtorch.invalid/cuda.zip\n"
                   "LIBTORCH_SHA256=0\nCUDA_KEYRING_SHA256=0\n")
    created = not (ROOT / ".env").exists()
    if created:
        (ROOT / ".env").write_text("")
    try:
        argv = [exe, "-p", "petcamcheck", "--env-file", str(env), "-f", str(COMPOSE)]
        for f in extra:
            argv += ["-f", str(f)]
        res = subprocess.run([*argv, "config", "-q"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        if created:
            (ROOT / ".env").unlink()
    assert res.returncode == 0, res.stderr


def test_test_override_stays_on_loopback():
    """tests/docker's override: every service in the host's network on 127.0.0.1, each app process with its own
    INSTANCE_ID (host networking shares the host name) and PORT, the database on a non-default port."""
    override = yaml.safe_load((ROOT / "tests" / "docker" / "docker-compose.test.yml").read_text())
    base = yaml.safe_load(COMPOSE.read_text())
    services = {n: {**base["services"].get(n, {}), **s} for n, s in override["services"].items()}
    assert set(base["services"]) <= set(services), "the override leaves a base service off the host network"
    env = {"POSTGRES_PASSWORD": "p", "SECRET_KEY": "k"}
    instances, ports = [], []
    for name in services:
        o = override["services"].get(name)
        assert o and o.get("network_mode") == "host", f"{name} is not on the host network in the override"
        if name == "db":
            assert "listen_addresses=127.0.0.1" in command(o)
            assert environment(o, env)["PGPORT"] != "5432"
            continue
        e = {**environment(services[name], env), **environment(o, env)}
        assert e["HOST"] == "127.0.0.1", name
        assert re.match(r"^postgresql://[^@]+@127\.0\.0\.1:(\d+)/", e["DATABASE_URL"]), e["DATABASE_URL"]
        assert e["DATABASE_URL"].split("@127.0.0.1:")[1].split("/")[0] == environment(override["services"]["db"], env)["PGPORT"]
        instances.append(e["INSTANCE_ID"])
        ports.append(e["PORT"])
    assert all(instances) and len(set(instances)) == len(instances), instances
    assert len(set(ports)) == len(ports), ports
    assert sum(1 for s in services.values() if role(s) == "worker") == 2
