"""``cryohub check-config``: every problem listed (file, key, reason), exit 2; secrets 0600."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cryod.hub.cli import main
from cryod.hub.config import ConfigError, load_config
from cryod.research.profile import builtin_study_path
from tests.mqtt.broker import make_pki


def secret(path: Path, mode: int = 0o600, content: str = "s3cret\n") -> Path:
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    (tmp_path / "anchors").mkdir()
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(builtin_study_path("mortons-neuroma-example"), studies / "mn.toml")
    secret(tmp_path / "db.password")
    secret(tmp_path / "broker.password")
    pki = make_pki(tmp_path / "pki")
    secret(tmp_path / "client.key", content=pki["client_key"].read_text())
    shutil.copy(pki["ca_crt"], tmp_path / "ca.pem")
    shutil.copy(pki["client_crt"], tmp_path / "client.pem")
    cfg = tmp_path / "cryohub.toml"
    cfg.write_text(
        """
[collector]
id = "study-hub"

[database]
url = "postgresql+psycopg://cryohub@db.example.org/cryohub"
password_file = "db.password"

[broker]
host = "broker.example.org"
port = 8883
username = "cryohub"
password_file = "broker.password"
tls = { ca_file = "ca.pem", cert_file = "client.pem", key_file = "client.key" }

[studies]
profiles_dir = "studies"

[anchors]
file = "anchors/cryohub.jsonl"
"""
    )
    return cfg


def test_a_good_config_loads_with_its_profiles(
    good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = load_config(good)
    assert loaded.node == "study-hub"
    assert loaded.url.drivername == "postgresql+psycopg"
    assert loaded.anchor_file == good.parent / "anchors" / "cryohub.jsonl"
    ((pid, _version),) = loaded.profile_book()
    assert pid == "MN-CRYO-EXAMPLE"
    assert main(["check-config", str(good)]) == 0
    assert "ok (1 study profile(s), database postgresql+psycopg)" in capsys.readouterr().out


def test_every_problem_is_listed_with_file_key_and_reason(
    good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (good.parent / "db.password").chmod(0o644)
    (good.parent / "client.key").chmod(0o640)
    text = good.read_text()
    text = text.replace('id = "study-hub"', 'id = "study hub"')
    text = text.replace("port = 8883", "port = 0\ncolour = 'blue'")
    good.write_text(text)
    assert main(["check-config", str(good)]) == 2
    err = capsys.readouterr().err.splitlines()
    src = str(good)
    expect = [
        f"{src}: collector.id: letters, digits",
        f"{src}: database.password_file: refusing secret file",
        f"{src}: broker.port: input should be greater than or equal to 1 (got 0)",
        f"{src}: broker.colour: unknown key",
        f"{src}: broker.tls.key_file: refusing secret file",
    ]
    for line in expect:
        assert any(e.startswith(line) for e in err), (line, err)
    assert any("chmod 600" in e for e in err)
    assert not any("Traceback" in e for e in err)


def test_url_profiles_and_anchor_problems_are_listed_together(
    good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    studies = good.parent / "studies"
    (studies / "broken.toml").write_text('schema = "cryod.study/1"\nversion = 3\n')
    shutil.copy(studies / "mn.toml", studies / "mn-copy.toml")
    text = good.read_text().replace("cryohub@db.example", "cryohub:pw@db.example")
    text = text.replace("anchors/cryohub.jsonl", "missing-dir/cryohub.jsonl")
    good.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(good)
    problems = exc.value.problems
    src = str(good)
    assert any(p.startswith(f"{src}: database.url: holds a password") for p in problems)
    assert any(
        p.startswith(f"{src}: studies.profiles_dir: ") and "broken.toml" in p for p in problems
    )
    assert any("are both MN-CRYO-EXAMPLE version" in p for p in problems)
    assert any(p.startswith(f"{src}: anchors.file: directory") for p in problems)


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (('username = "cryohub"\n', ""), "broker: password_file needs username"),
        (
            ('url = "postgresql+psycopg://cryohub@db.example.org/cryohub"', 'url = "mysql://x/y"'),
            "use postgresql+psycopg:// or sqlite:///",
        ),
        (
            (
                'url = "postgresql+psycopg://cryohub@db.example.org/cryohub"',
                'url = "sqlite:///:memory:"',
            ),
            "a SQLite database is a file path",
        ),
        (("tls = { ca_file", "# tls = { ca_file"), "needs [broker.tls]"),
        (('[anchors]\nfile = "anchors/cryohub.jsonl"', ""), "anchors: required"),
    ],
)
def test_specific_refusals(good: Path, edit: tuple[str, str], expect: str) -> None:
    text = good.read_text()
    assert edit[0] in text
    good.write_text(text.replace(*edit))
    with pytest.raises(ConfigError) as exc:
        load_config(good)
    assert any(expect in p for p in exc.value.problems), exc.value.problems


def test_tls_files_that_do_not_load_are_refused_at_start(
    good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CA or client certificate that is not what it claims is a config problem (exit 2, one
    line naming the key and file), not a traceback at the first connection."""
    assert main(["check-config", str(good)]) == 0
    capsys.readouterr()
    folder = good.parent
    other = make_pki(folder / "other")
    secret(folder / "client.key", content=other["client_key"].read_text())  # not client.pem's key
    assert main(["check-config", str(good)]) == 2
    err = capsys.readouterr().err
    assert f"{good}: broker.tls: cert_file {folder / 'client.pem'} with key_file" in err
    (folder / "ca.pem").write_text("not a certificate\n")
    assert main(["run", "--config", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"{good}: broker.tls: ca_file {folder / 'ca.pem'}: not a PEM CA certificate "
        "(NO_CERTIFICATE_OR_CRL_FOUND)"
    )
    assert "Traceback" not in err


def test_a_missing_or_unparsable_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'none.toml'}: file not found"
    bad = tmp_path / "bad.toml"
    bad.write_text("[collector\n")
    assert main(["check-config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_a_sqlite_url_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "sqlite:///var/hub.db"\n[anchors]\nfile = "a.jsonl"\n')
    loaded = load_config(cfg)
    assert loaded.url.database == str(tmp_path / "var" / "hub.db")
    assert loaded.profiles == []


def test_the_example_config_shipped_in_the_docs_parses(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "cryohub.example.toml"
    text = example.read_text()
    # its paths are a real install's; only the structure is checked here
    import tomllib

    from cryod.hub.config import HubConfig

    raw = tomllib.loads(text)
    for section in ("database", "broker"):
        raw.get(section, {}).pop("password_file", None)
    raw["broker"].pop("tls", None)
    raw["broker"]["host"] = "localhost"
    HubConfig.model_validate(raw)
