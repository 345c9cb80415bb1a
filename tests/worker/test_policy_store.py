"""Policy store: publishing versions from run directories, looking them up, verifying, announcing."""

import json
import multiprocessing
import sys
from pathlib import Path

import msgpack
import pytest
import torch

from maze_engine import GymMazeEnv, TorchPolicy
from maze_engine.core.errors import ConfigError, SpaceMismatchError
from worker.policy_store.announcements import (
    Announcement,
    AnnouncementError,
    decode_announcement,
    encode_announcement,
)
from worker.policy_store.store import (
    MANIFEST_FILE,
    PolicyStoreError,
    PublishedPolicy,
    file_sha256,
    get_policy,
    latest_policy,
    load_published_policy,
    load_version,
    publish_policy,
    published_versions,
)

sys.path.insert(0, str(Path(__file__).parent))
from policy_harness import model_config, save_run  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(tmp_path_factory.mktemp("run"), seed=1)


@pytest.fixture
def env() -> GymMazeEnv:
    return GymMazeEnv("CartPole-v1")


def test_publish_copies_the_run_and_writes_a_manifest(tmp_path: Path, run_dir: Path) -> None:
    published = publish_policy(tmp_path, "cartpole", run_dir)
    assert isinstance(published, PublishedPolicy)
    assert (published.name, published.version) == ("cartpole", 1)
    assert published.path == tmp_path / "policies" / "cartpole" / "1"
    files = {"state_dict.pt", "spaces.json", "model.yaml", "config.yaml"}
    assert {path.name for path in published.path.iterdir()} == files | {MANIFEST_FILE}
    manifest = json.loads((published.path / MANIFEST_FILE).read_text())
    assert manifest["name"] == "cartpole" and manifest["version"] == 1
    assert manifest["source_run_dir"] == str(run_dir.resolve())
    assert manifest["created"].endswith("+00:00")
    assert {file: entry["sha256"] for file, entry in manifest["files"].items()} == {
        file: file_sha256(run_dir / file) for file in files}
    assert published.checksums == {file: file_sha256(run_dir / file) for file in files}
    assert get_policy(tmp_path, "cartpole", 1) == published


def test_versions_are_consecutive_and_latest_is_the_highest(tmp_path: Path, run_dir: Path) -> None:
    assert latest_policy(tmp_path, "cartpole") is None
    versions = [publish_policy(tmp_path, "cartpole", run_dir).version for _ in range(3)]
    assert versions == [1, 2, 3]
    assert publish_policy(tmp_path, "other", run_dir).version == 1
    latest = latest_policy(tmp_path, "cartpole")
    assert latest is not None and latest.version == 3
    # Leftovers of an interrupted publisher are ignored, and no staging directory stays behind.
    (tmp_path / "policies" / "cartpole" / "7").mkdir()
    assert published_versions(tmp_path, "cartpole") == [1, 2, 3]
    assert not [entry for entry in (tmp_path / "policies" / "cartpole").iterdir()
                if entry.name.startswith(".")]
    assert publish_policy(tmp_path, "cartpole", run_dir).version == 8


def _publish_many(root: str, run_dir: str, count: int, results: "multiprocessing.Queue[int]") -> None:
    for _ in range(count):
        results.put(publish_policy(root, "shared", run_dir).version)


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path, run_dir: Path) -> None:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[int] = context.Queue()
    processes = [context.Process(target=_publish_many, args=(str(tmp_path), str(run_dir), 4, results))
                 for _ in range(3)]
    for process in processes:
        process.start()
    versions = sorted(results.get(timeout=120) for _ in range(12))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert versions == list(range(1, 13))
    assert published_versions(tmp_path, "shared") == versions


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 65, "naïve", "with space", 3, None])
def test_invalid_names_are_refused_naming_the_field(tmp_path: Path, run_dir: Path, name: object) -> None:
    with pytest.raises(ConfigError, match=r"^name: expected 1-64 letters"):
        publish_policy(tmp_path, name, run_dir)  # type: ignore[arg-type]
    assert not (tmp_path / "policies").exists()


def test_a_run_directory_without_the_model_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spaces.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"^run_dir: .* lacks state_dict.pt, model.yaml"):
        publish_policy(tmp_path / "root", "cartpole", tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^run_dir: .*not a directory"):
        publish_policy(tmp_path / "root", "cartpole", tmp_path / "nowhere")


def test_a_published_version_loads_as_the_trained_policy(tmp_path: Path, run_dir: Path,
                                                         env: GymMazeEnv) -> None:
    published = publish_policy(tmp_path, "cartpole", run_dir)
    policy = load_version(published, env.action_spaces_dict, env.observation_spaces_dict)
    assert isinstance(policy, TorchPolicy)
    saved = torch.load(run_dir / "state_dict.pt", weights_only=True)["policy"]
    assert all(torch.equal(value, saved[key]) for key, value in policy.state_dict().items())
    latest = load_published_policy("cartpole", tmp_path, action_spaces_dict=env.action_spaces_dict,
                                   observation_spaces_dict=env.observation_spaces_dict)
    assert isinstance(latest, TorchPolicy)


def test_nothing_published_under_the_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^policy.name: no version of policy 'cartpole' is published"):
        load_published_policy("cartpole", tmp_path)
    with pytest.raises(PolicyStoreError, match=r"policy 'cartpole' version 4: .* not found"):
        get_policy(tmp_path, "cartpole", 4)


def test_a_corrupt_file_is_rejected_naming_the_version(tmp_path: Path, run_dir: Path,
                                                       env: GymMazeEnv) -> None:
    publish_policy(tmp_path, "cartpole", run_dir)
    published = publish_policy(tmp_path, "cartpole", run_dir)
    weights = published.path / "state_dict.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(PolicyStoreError, match=r"'cartpole' version 2: .*state_dict.pt does not match"):
        load_version(published, env.action_spaces_dict, env.observation_spaces_dict)
    missing = publish_policy(tmp_path, "cartpole", run_dir)
    (missing.path / "spaces.json").unlink()
    with pytest.raises(PolicyStoreError, match=r"version 3: .*spaces.json cannot be read"):
        load_version(missing, env.action_spaces_dict, env.observation_spaces_dict)
    (missing.path / MANIFEST_FILE).write_text("{not json")
    assert published_versions(tmp_path, "cartpole") == [1, 2, 3]
    with pytest.raises(PolicyStoreError, match=r"version 3: .*not a readable JSON manifest"):
        latest_policy(tmp_path, "cartpole")


def test_weights_that_do_not_fit_the_model_are_rejected(tmp_path: Path, run_dir: Path,
                                                        env: GymMazeEnv) -> None:
    mixed = save_run(tmp_path / "mixed", seed=2, hidden=32)
    (mixed / "model.yaml").write_text((run_dir / "model.yaml").read_text())  # says 16 hidden units
    assert model_config(16) != model_config(32)
    published = publish_policy(tmp_path / "root", "cartpole", mixed)
    with pytest.raises(ConfigError, match=r"saved weights do not fit"):
        load_version(published, env.action_spaces_dict, env.observation_spaces_dict)


def test_spaces_of_another_env_are_rejected(tmp_path: Path, env: GymMazeEnv) -> None:
    other = save_run(tmp_path / "acrobot", env_name="Acrobot-v1")
    published = publish_policy(tmp_path / "root", "cartpole", other)
    with pytest.raises(SpaceMismatchError, match=r"the trained space"):
        load_version(published, env.action_spaces_dict, env.observation_spaces_dict)


def test_pickled_objects_in_the_weights_are_refused(tmp_path: Path, run_dir: Path, env: GymMazeEnv) -> None:
    unsafe = save_run(tmp_path / "unsafe")
    torch.save({"policy": {"net": Path("/etc/passwd")}}, unsafe / "state_dict.pt")
    published = publish_policy(tmp_path / "root", "cartpole", unsafe)
    with pytest.raises(ConfigError, match=r"cannot be loaded safely"):
        load_version(published, env.action_spaces_dict, env.observation_spaces_dict)


def test_announcements_round_trip_with_a_root_relative_path(tmp_path: Path, run_dir: Path) -> None:
    published = publish_policy(tmp_path, "cart.pole-v1", run_dir)
    body = encode_announcement(published)
    assert msgpack.unpackb(body) == {"v": 1, "name": "cart.pole-v1", "version": 1,
                                     "path": "policies/cart.pole-v1/1"}
    announcement = decode_announcement(body)
    assert announcement == Announcement("cart.pole-v1", 1, "policies/cart.pole-v1/1")
    assert announcement.resolve(tmp_path) == published.path
    assert announcement.resolve("/mnt/elsewhere") == Path("/mnt/elsewhere/policies/cart.pole-v1/1")


GOOD = {"v": 1, "name": "cartpole", "version": 2, "path": "policies/cartpole/2"}


@pytest.mark.parametrize(("body", "field"), [
    (b"\xc1", "body"),
    (msgpack.packb([1, 2]), "body"),
    (msgpack.packb({**GOOD, "v": 2}), "v"),
    (msgpack.packb({key: value for key, value in GOOD.items() if key != "v"}), "v"),
    (msgpack.packb({**GOOD, "name": "../x"}), "name"),
    (msgpack.packb({**GOOD, "version": 0}), "version"),
    (msgpack.packb({**GOOD, "version": "2"}), "version"),
    (msgpack.packb({**GOOD, "path": "/abs/policies/cartpole/2"}), "path"),
    (msgpack.packb({**GOOD, "path": "policies/cartpole/../../x"}), "path"),
    (msgpack.packb({**GOOD, "path": None}), "path"),
])
def test_bad_announcements_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(AnnouncementError, match=rf"^{field}: expected") as caught:
        decode_announcement(body)
    assert caught.value.field == field
