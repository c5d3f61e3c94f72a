"""Drama splits: the hash-threshold rule, splits.json (written once, read by every tool), and
that training, resynth and evaluation see the same disjoint train / val / test."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import write_tiny_dataset
from omegaconf import OmegaConf

from isdrama.data.cli import main as data_cli
from isdrama.data.datamodule import DataConfig, DramaDataModule
from isdrama.data.dataset import ItemOptions
from isdrama.data.mrsdrama import load_dataset
from isdrama.data.splits import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    SPLITS,
    SPLITS_FILE,
    Splits,
    SplitsError,
    assign_splits,
    dataset_drama_ids,
    ensure_splits,
    load_splits,
    read_splits,
    split_point,
    threshold_split,
    write_splits,
)
from isdrama.inference.resynth import line_name, select_lines

REPO = Path(__file__).resolve().parents[1]


def _ids(rng: random.Random, n: int) -> list[str]:
    return sorted({f"set{rng.randrange(3)}/drama{rng.randrange(10**6):06d}" for _ in range(n)})


def _module(root: Path, val: float = 0.25, test: float = 0.25, seed: int = 0, **kw) -> DramaDataModule:
    cfg = DataConfig(
        root=str(root),
        val_fraction=val,
        test_fraction=test,
        seed=seed,
        items=ItemOptions(frame_rate=75.0, load_tokens=False, load_pose=False, prompt_max_frames=0),
        **kw,
    )
    dm = DramaDataModule(cfg)
    dm.setup()
    return dm


# ------------------------------------------------------------------------------ the rule
def test_threshold_rule_by_hand():
    ids = [f"room1/drama{d:02d}" for d in range(200)]
    for i in ids:
        u = split_point(i, 7)
        assert 0 <= u < 1
        expected = "test" if u < 0.1 else "val" if u < 0.25 else "train"
        assert threshold_split(i, 0.15, 0.1, seed=7) == expected
    # roughly uniform: 200 points, each decile between 5 and 40 of them
    deciles = [int(split_point(i, 7) * 10) for i in ids]
    assert all(5 <= deciles.count(k) <= 40 for k in range(10))
    assert split_point("room1/drama00", 0) != split_point("room1/drama00", 1)  # the seed matters


def test_changing_val_fraction_never_moves_a_test_drama():
    rng = random.Random(0)
    for _ in range(400):
        ids = _ids(rng, rng.randrange(1, 40))
        seed = rng.randrange(5)
        test = rng.choice([0.0, rng.uniform(0, 0.5)])
        v1, v2 = (rng.uniform(0, 0.99 - test) for _ in range(2))
        a, b = assign_splits(ids, v1, test, seed), assign_splits(ids, v2, test, seed)
        assert {i for i in ids if a[i] == "test"} == {i for i in ids if b[i] == "test"}, (ids, seed, test, v1, v2)
        assert all(threshold_split(i, v1, test, seed) == "test" for i in ids if split_point(i, seed) < test)


def test_adding_dramas_moves_no_other_drama():
    rng = random.Random(1)
    for _ in range(200):
        ids = _ids(rng, rng.randrange(1, 40))
        more = sorted(set(ids) | set(_ids(rng, rng.randrange(1, 10))))
        val, test, seed = rng.uniform(0, 0.45), rng.uniform(0, 0.45), rng.randrange(5)
        before = {i: threshold_split(i, val, test, seed) for i in ids}
        after = {i: threshold_split(i, val, test, seed) for i in more}
        assert all(after[i] == before[i] for i in ids)
        # through a split file, also when the small-dataset rule placed some dramas
        first = Splits.create(ids, val, test, seed)
        grown, added = first.with_dramas(more)
        assert set(added) == set(more) - set(ids)
        assert all(grown.assignment[i] == first.assignment[i] for i in ids)
        assert all(grown.assignment[i] == threshold_split(i, val, test, seed) for i in added)


def test_small_dataset_rule():
    # 4 dramas of seed 0: points 0.79, 0.63, 0.51, 0.36, so the pure rule leaves val and test empty
    ids = [f"room1/drama{d:02d}" for d in range(4)]
    assert all(split_point(i, 0) > 0.35 for i in ids)
    out = assign_splits(ids, 0.25, 0.25, seed=0)
    assert out == {"room1/drama03": "test", "room1/drama02": "val", "room1/drama01": "train", "room1/drama00": "train"}
    # fewer than 3 dramas: nothing is moved, an empty split stays empty
    assert assign_splits(ids[:2], 0.25, 0.25, seed=0) == {i: "train" for i in ids[:2]}
    # a zero fraction is never filled
    assert "val" not in assign_splits(ids, 0.0, 0.25, seed=0).values()
    with pytest.raises(ValueError, match="sum below 1"):
        assign_splits(ids, 0.6, 0.5)


# ------------------------------------------------------------------------------ the file
def test_file_written_atomically_and_read_back(tmp_path, monkeypatch):
    path = tmp_path / SPLITS_FILE
    splits = Splits.create([f"s/d{i}" for i in range(30)], 0.2, 0.1, seed=3)
    written = write_splits(path, splits)
    assert written.path == path
    back = read_splits(path)
    assert back.assignment == splits.assignment and back.digest == splits.digest
    assert (back.seed, back.val_fraction, back.test_fraction) == (3, 0.2, 0.1)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["digest"] == splits.digest
    assert sorted(data["train"] + data["val"] + data["test"]) == sorted(splits.assignment)
    assert [p.name for p in tmp_path.iterdir()] == [SPLITS_FILE]  # no temporary file left
    # a write that fails at the rename leaves the old file whole and no temporary file
    import isdrama.utils.io as io

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", fail)
    with pytest.raises(SplitsError, match="cannot write the split file"):
        write_splits(path, Splits.create(["s/other"], 0.2, 0.1))
    assert read_splits(path).assignment == splits.assignment
    assert [p.name for p in tmp_path.iterdir()] == [SPLITS_FILE]


def _valid() -> dict:
    return Splits.create(["a/d1", "a/d2", "a/d3", "b/d4"], 0.25, 0.25).to_json()


@pytest.mark.parametrize(
    "edit, field, message",
    [
        (lambda d: d.pop("seed"), "seed", "missing field"),
        (lambda d: d.update(seed="0"), "seed", "expected an integer"),
        (lambda d: d.update(version=2), "version", "unsupported version"),
        (lambda d: d.update(val_fraction=1.5), "val_fraction", r"number in \[0, 1\)"),
        (lambda d: d.update(test_fraction=None), "test_fraction", r"number in \[0, 1\)"),
        (lambda d: d.update(val_fraction=0.6, test_fraction=0.5), "val_fraction", "must be below 1"),
        (lambda d: d.update(train="a/d1"), "train", "list of drama ids"),
        (lambda d: d.update(test=[*d["test"], 3]), "test", "list of drama ids"),
        (lambda d: d.update(val=[*d["val"], d["train"][0]]), "val", "listed in both train and val"),
        (lambda d: d.update(train=d["train"][1:]), "digest", "does not match the listed dramas"),
    ],
)
def test_malformed_file_names_the_file_and_the_field(tmp_path, edit, field, message):
    data = _valid()
    edit(data)
    path = tmp_path / SPLITS_FILE
    path.write_text(json.dumps(data))
    with pytest.raises(SplitsError, match=message) as err:
        read_splits(path)
    assert str(path) in str(err.value) and f"[key '{field}']" in str(err.value)


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / SPLITS_FILE
    path.write_text('{"version": 1,')
    with pytest.raises(SplitsError, match="malformed JSON") as err:
        load_splits(tmp_path)
    assert str(path) in str(err.value)
    path.write_text("[]")
    with pytest.raises(SplitsError, match="expected a JSON object"):
        load_splits(path)
    with pytest.raises(SplitsError, match="split file not found.*isdrama-data split"):
        load_splits(tmp_path / "none")


def test_edited_lists_accepted_without_digest(tmp_path):
    data = _valid()
    moved = data["train"].pop()
    data["val"].append(moved)
    del data["digest"]
    (tmp_path / SPLITS_FILE).write_text(json.dumps(data))
    assert load_splits(tmp_path).split_of(moved) == "val"
    with pytest.raises(SplitsError, match="'b/none' is not listed"):
        load_splits(tmp_path).split_of("b/none")


def test_ensure_creates_then_checks_then_extends(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=6, lines_per_drama=1)
    ids = [s.key for s in load_dataset(root).scenes]
    assert dataset_drama_ids(root) == sorted(ids)
    with pytest.raises(SplitsError, match="split file not found"):
        ensure_splits(root, ids)  # nothing to create it from
    first = ensure_splits(root, ids, 0.25, 0.25, 0)
    assert first.path == root / SPLITS_FILE and (root / SPLITS_FILE).is_file()
    mtime = (root / SPLITS_FILE).stat().st_mtime_ns
    assert ensure_splits(root, ids).assignment == first.assignment  # None: the file's values
    assert ensure_splits(root, ids, 0.25, 0.25, 0).assignment == first.assignment
    assert (root / SPLITS_FILE).stat().st_mtime_ns == mtime  # unchanged file is not rewritten
    # mismatched fractions or seed: a clear error, never a silent re-split
    with pytest.raises(SplitsError) as err:
        ensure_splits(root, ids, 0.3, 0.25, 0, hint="(use data.val_fraction)")
    msg = str(err.value)
    assert str(root / SPLITS_FILE) in msg and "val_fraction=0.25 (asked for 0.3)" in msg
    assert "--val 0.3 --test 0.25 --seed 0 --force" in msg and "data.val_fraction" in msg
    with pytest.raises(SplitsError, match=r"seed=0 \(asked for 1\)"):
        ensure_splits(root, ids, 0.25, 0.25, 1)
    assert read_splits(root / SPLITS_FILE).assignment == first.assignment
    # the dataset grows: new dramas by the pure rule, nothing else moves, the file is updated
    write_tiny_dataset(tmp_path / "ds", n_dramas=12, lines_per_drama=1)
    ids2 = [s.key for s in load_dataset(root).scenes]
    grown = ensure_splits(root, ids2, 0.25, 0.25, 0)
    assert all(grown.assignment[i] == first.assignment[i] for i in ids)
    assert all(grown.assignment[i] == threshold_split(i, 0.25, 0.25, 0) for i in set(ids2) - set(ids))
    assert read_splits(root / SPLITS_FILE).assignment == grown.assignment
    # a drama the dataset lost stays listed
    shutil.rmtree(root / "room1" / "drama11")
    assert ensure_splits(root, dataset_drama_ids(root)).assignment == grown.assignment


# ------------------------------------------------------------------------------ every tool, one split
def test_datamodule_resynth_and_eval_agree_and_are_disjoint(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=10, lines_per_drama=2)
    dm = _module(root, 0.25, 0.25, seed=0)
    splits = load_splits(root)
    assert dm.splits.assignment == splits.assignment
    dm_keys = {s: {ln.key for ln in dm.datasets[s].lines} for s in SPLITS}
    rs_keys = {s: {ln.key for ln in select_lines(root, s, None)[0]} for s in SPLITS}
    assert dm_keys == rs_keys
    assert all(dm_keys[s] for s in SPLITS)
    assert sum(map(len, dm_keys.values())) == 20 == len(set.union(*dm_keys.values()))
    dramas = {s: {k.rsplit("/", 1)[0] for k in dm_keys[s]} for s in SPLITS}
    assert not (dramas["train"] & dramas["val"] or dramas["train"] & dramas["test"] or dramas["val"] & dramas["test"])
    # evaluation: resynth's file names of a split pass the check for that split only
    names = {s: [line_name(ln) for ln in dm.datasets[s].lines] for s in SPLITS}
    for s in SPLITS:
        splits.check_names(names[s], s)
        for other in set(SPLITS) - {s}:
            with pytest.raises(SplitsError, match=f"outside the {other} split"):
                splits.check_names(names[s][:1], other)
    with pytest.raises(SplitsError, match="of no listed drama: utt0"):
        splits.check_names(["utt0"], "test")
    # a second data module with other fractions refuses to re-split
    with pytest.raises(SplitsError, match=r"val_fraction=0.25 \(asked for 0.2\).*data.val_fraction"):
        _module(root, 0.2, 0.25, seed=0)
    # a custom split file (e.g. beside the run) is written there and the root keeps none of it
    other = tmp_path / "run" / "splits.json"
    dm2 = _module(root, 0.2, 0.25, seed=0, splits_file=str(other))
    assert dm2.splits.path == other and read_splits(other).val_fraction == 0.2
    assert {ln.key for ln in dm2.datasets["test"].lines} == dm_keys["test"]  # val changed, test did not


def test_sets_filter_uses_the_whole_roots_split(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=6, lines_per_drama=1, set_name="roomA")
    write_tiny_dataset(tmp_path / "ds", n_dramas=6, lines_per_drama=1, set_name="roomB")
    full = _module(root)
    part = _module(root, sets=["roomA"])
    assert full.splits.assignment == part.splits.assignment and len(part.splits.assignment) == 12
    for s in SPLITS:
        assert {ln.key for ln in part.datasets[s].lines} == {
            ln.key for ln in full.datasets[s].lines if ln.key.startswith("roomA/")
        }


def test_resynth_reads_the_file_and_has_no_fractions_of_its_own(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=4, lines_per_drama=1)
    out = tmp_path / "rs"
    argv = ["resynth", str(root), str(out), "--split", "test", "--bandwidth", "1.5", "--pretrained", "false", "--quiet"]
    assert data_cli(argv) == 1
    err = capsys.readouterr().err
    assert f"{root / SPLITS_FILE}" in err and "split file not found" in err and "isdrama-data split" in err
    _module(root, 0.25, 0.25)  # training writes the file
    assert data_cli([*argv, "--val-fraction", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "val_fraction=0.25 (asked for 0.1)" in err and "--val-fraction" in err
    assert not out.exists()


def test_eval_cli_checks_gt_lines_against_the_split(tmp_path, capsys):
    from isdrama.metrics.cli import main as eval_cli

    root = write_tiny_dataset(tmp_path / "ds", n_dramas=4, lines_per_drama=1)
    dm = _module(root, 0.25, 0.25)
    for d in ("gt", "infer"):
        (tmp_path / d).mkdir()
    test_line, train_line = dm.datasets["test"].lines[0], dm.datasets["train"].lines[0]
    for line in (test_line, train_line):
        for d in ("gt", "infer"):
            shutil.copyfile(line.wav_path, tmp_path / d / f"{line_name(line)}.wav")
    argv = [
        str(tmp_path / "gt"),
        str(tmp_path / "infer"),
        "--out",
        str(tmp_path / "report"),
        "--quiet",
        "--metrics",
        "ild",
        "--no-plots",
        "--splits",
        str(root),
    ]
    assert eval_cli(argv) == 2
    err = capsys.readouterr().err
    assert str(root / SPLITS_FILE) in err and f"{line_name(train_line)} (train)" in err
    for d in ("gt", "infer"):
        (tmp_path / d / f"{line_name(train_line)}.wav").unlink()
    assert eval_cli(argv) == 0, capsys.readouterr().err
    settings = json.loads((tmp_path / "report" / "results.json").read_text())["settings"]
    assert settings["split"] == "test" and settings["splits"] == str(root / SPLITS_FILE)
    assert settings["splits_digest"] == dm.splits.digest[:12]


def test_split_cli(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=10, lines_per_drama=1)
    assert data_cli(["split", str(root)]) == 0
    splits = load_splits(root)
    assert (splits.val_fraction, splits.test_fraction, splits.seed) == (
        DEFAULT_VAL_FRACTION,
        DEFAULT_TEST_FRACTION,
        DEFAULT_SEED,
    )
    assert f"{root / SPLITS_FILE}: 10 dramas" in capsys.readouterr().out
    assert data_cli(["split", str(root), "--val", "0.4"]) == 2
    assert "val_fraction=0.15 (asked for 0.4)" in capsys.readouterr().err
    assert data_cli(["split", str(root), "--val", "0.4", "--force"]) == 0
    printed = capsys.readouterr()
    resplit = load_splits(root)
    assert resplit.val_fraction == 0.4 and resplit.ids("test") == splits.ids("test")
    assert "changed split" in printed.out and "left the test split" not in printed.err
    assert data_cli(["split", str(root), "--val", "0.7", "--test", "0.5", "--force"]) == 2
    assert data_cli(["split", str(tmp_path / "nothing")]) == 2


# ------------------------------------------------------------------------------ one set of fractions
def test_fractions_live_in_the_data_configs_only():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for exp in (REPO / "configs" / "experiment").glob("*.yaml"):
        data = OmegaConf.load(exp).get("data") or {}
        assert not {"val_fraction", "test_fraction", "seed", "splits_file"} & set(data), exp
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert not any(flag in demo for flag in ("val_fraction", "test_fraction", "--val", "--test ")), demo
    synth = OmegaConf.load(REPO / "configs" / "data" / "synth_demo.yaml")
    assert (synth.val_fraction, synth.test_fraction, synth.seed) == (
        DEFAULT_VAL_FRACTION,
        DEFAULT_TEST_FRACTION,
        DEFAULT_SEED,
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        for exp in ("demo", "pose_pretrain"):
            cfg = compose(config_name="train", overrides=[f"experiment={exp}"])
            # what `isdrama-data synth` writes is what the demo trains with
            assert (cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed) == (
                DEFAULT_VAL_FRACTION,
                DEFAULT_TEST_FRACTION,
                DEFAULT_SEED,
            ), exp
    GlobalHydra.instance().clear()
