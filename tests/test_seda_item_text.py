"""SeDA with per-item text (``text_source: item``): COCO captions as a data fact, the per-image targets,
no item text at evaluation, and a fit on a COCO-LT fixture in the real formats."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ltbench.data import COCOLT, DigitsLT, FewShot
from ltbench.data.synthetic import write_fake_coco_lt
from ltbench.errors import DataError, LTBenchError
from ltbench.models.clip_text import TINY_TEXT, build_text_tower, class_text_features, grouped_text_features
from ltbench.runner import build, run
from tests.helpers import REPO

UNKNOWN = "ignore:.*matches no published"
SEDA_DIGITS = str(REPO / "configs" / "seda_digits_lt.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]
# items 0, 1 and 5 are all "person" alone, each with other captions; item 3 has one caption, item 2 five
TRAIN_LABELS = [[0], [0], [0, 2], [1], [2], [0]]
TEST_LABELS = [[0], [1], [2], [0, 1]]
CAPTIONS = [
    ["a man on a red bike.", "someone riding a bicycle."],
    ["a woman reading a book.", "a person with a novel."],
    ["a cyclist beside a car.", "a car and a man.", "a busy street.", "a red car parked.", "a person waves."],
    ["a bicycle by a wall."],
    ["a small blue car.", "a parked car."],
    ["a child eats cake.", "a kid at a party."],
]
TINY = ["--model.init_args.width", "16", "--model.init_args.depth", "1", "--model.init_args.heads", "2",
        "--model.init_args.num_train_timesteps", "50", "--model.init_args.sample_steps", "2"]  # fmt: skip


@pytest.fixture
def coco(tmp_path) -> Path:
    return write_fake_coco_lt(tmp_path / "coco", TRAIN_LABELS, TEST_LABELS, CAPTIONS)


def _captions(root: Path) -> Path:
    return root / "annotations" / "captions_train2017.json"


def _data_yaml(root: Path, tmp_path: Path, captions: bool = True) -> str:
    init = {"root": str(root), "image_size": 16, "train_augment": "none", "batch_size": 4, "pin_memory": False}
    if captions:
        init["captions"] = str(_captions(root))
    path = tmp_path / ("coco_captions.yaml" if captions else "coco.yaml")
    path.write_text(yaml.safe_dump({"class_path": "ltbench.data.COCOLT", "init_args": init}))
    return str(path)


def _by_hand(groups: list[list[str]]) -> torch.Tensor:
    """Each group's texts through the seeded tiny tower one at a time, normalised, averaged, normalised."""
    from open_clip import get_tokenizer

    torch.manual_seed(0)
    tower = build_text_tower(TINY_TEXT).eval()
    tok = get_tokenizer(TINY_TEXT)
    with torch.no_grad():
        out = []
        for texts in groups:
            each = torch.stack([F.normalize(tower(tok([t]))[0].float(), dim=-1) for t in texts])
            out.append(F.normalize(each.mean(0), dim=-1))
    return torch.stack(out)


# ---- the data fact -------------------------------------------------------------------------------------
@pytest.mark.filterwarnings(UNKNOWN)
def test_coco_item_texts_are_each_images_captions_in_index_order(coco):
    dm = COCOLT(root=str(coco), image_size=16, captions=str(_captions(coco)))
    texts = dm.item_texts("train")
    assert texts == CAPTIONS  # the json lists the images in reverse: matched by file name, not by position
    train = dm.dataset("train")
    assert [train[k][2] for k in range(len(train))] == list(range(len(CAPTIONS)))  # the index a batch carries
    assert dm.item_texts("test") is None and dm.item_texts("val") is None
    assert COCOLT(root=str(coco)).item_texts("train") is None
    facts = dm.protocol()["item_texts"]
    assert facts["file"] == str(_captions(coco)) and facts["texts"] == sum(map(len, CAPTIONS)) and facts["items"] == 6
    assert "item_texts" not in COCOLT(root=str(coco)).protocol()


@pytest.mark.filterwarnings(UNKNOWN)
def test_a_missing_caption_is_one_line_naming_the_file_and_the_image(coco):
    path = _captions(coco)
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1007]  # item 1's captions
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^{path}: image 1007 \(000000001007.jpg, item 2 of .*coco_lt_train.txt\) has no caption$"):
        COCOLT(root=str(coco), captions=str(path)).item_texts("train")
    data["images"] = [im for im in data["images"] if im["id"] != 1007]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^{path}: no image 000000001007.jpg \(item 2 of "):
        COCOLT(root=str(coco), captions=str(path)).item_texts("train")
    with pytest.raises(DataError, match=r"COCO captions missing: expected .*nope.json \(data.init_args.captions; "):
        COCOLT(root=str(coco), captions=str(coco / "nope.json")).item_texts("train")
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"COCO captions unreadable: .*captions_train2017.json \(JSONDecodeError"):
        COCOLT(root=str(coco), captions=str(path)).item_texts("train")


class _TextDigits(DigitsLT):
    """Digits with a made-up text per training item (naming its position), for the wrappers."""

    def item_texts(self, split):
        return [[f"digit item {i}"] for i in range(len(self.split_targets(split)))]


def test_few_shot_wrapper_gives_the_kept_items_texts_under_its_own_index():
    inner = _TextDigits(imb_ratio=10)
    fs = FewShot(data=inner, shots=3, shot_seed=1)
    texts = fs.item_texts("train")
    train = fs.dataset("train")
    assert len(texts) == len(train) == fs.num_train
    for k in range(len(train)):
        image, _, index = train[k]
        j = int(texts[index][0].rsplit(" ", 1)[1])  # the inner position the text names
        assert torch.equal(image, inner.dataset("train")[j][0])
    assert fs.item_texts("test") is None  # per-item texts are training targets only
    assert FewShot(data=DigitsLT(imb_ratio=10), shots=3).item_texts("train") is None


# ---- the method ----------------------------------------------------------------------------------------
def test_grouped_features_and_the_class_prompt_ensemble_equal_a_hand_computation():
    """Batched over groups (batch 2 splits them), each text normalised, a group's averaged and normalised;
    the class prompt ensemble is the same over each class's templates (underscores read as spaces)."""
    names = ["cat", "dog", "traffic_light"]
    templates = ("a photo of a {}.", "art of the {}.", "itap of a {}.")
    groups = [[t.format(n.replace("_", " ")) for t in templates] for n in names]
    expected = _by_hand(groups)
    assert torch.allclose(grouped_text_features(groups, TINY_TEXT, batch_size=2), expected, atol=1e-6)
    assert torch.allclose(class_text_features(names, list(templates), TINY_TEXT), expected, atol=1e-6)


@pytest.mark.filterwarnings(UNKNOWN)
def test_item_targets_are_the_mean_of_each_images_normalised_caption_embeddings(coco, tmp_path):
    model, dm = build(["--config", SEDA_DIGITS, "--data", _data_yaml(coco, tmp_path), "--model.init_args.text_source", "item", *TINY])
    assert model.item_raw.shape == (6, 64)
    model.prepare_text(dm)
    expected = _by_hand(CAPTIONS)
    assert torch.allclose(model.item_raw, expected, atol=1e-5)
    dm.setup("fit")
    x, y, index = next(iter(torch.utils.data.DataLoader(dm.dataset("train"), batch_size=4, sampler=[5, 0, 3, 1])))
    assert index.tolist() == [5, 0, 3, 1]
    target = model.text_target(y, index)
    # text_norm standardise: by the exact mean and (biased) variance over the six item features
    mean, var = expected.mean(0), expected.var(0, unbiased=False)
    assert torch.allclose(target, (expected[[5, 0, 3, 1]] - mean) / (var + 1e-5).sqrt(), atol=1e-4)
    person = target[[0, 1, 3]]  # three images of "person" alone, with their own captions
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[3])
    assert (person[0] - person[1]).abs().max() > 1e-2 and (person[1] - person[2]).abs().max() > 1e-2
    model_c, dm_c = build(["--config", SEDA_DIGITS, "--data", _data_yaml(coco, tmp_path), *TINY])
    model_c.prepare_text(dm_c)
    same = model_c.text_target(y)
    assert torch.equal(same[0], same[1]) and model_c.item_raw is None and "item_raw" not in model_c.state_dict()


def test_class_mode_checkpoints_keep_their_keys_and_fit_statistics_are_local(monkeypatch):
    """text_source: class keeps the state dict it had before item texts existed (older checkpoints load
    strictly), and fitting the text normalisation over a fixed set reduces nothing across processes (so it
    needs no process group on the text features' device)."""
    from ltbench.models import feature_stats
    from ltbench.models.feature_stats import FeatureNorm

    monkeypatch.setattr(feature_stats, "all_reduce_sum", lambda t: pytest.fail("fit reduced across processes"))
    norm = FeatureNorm(3)
    x = torch.randn(5, 3, dtype=torch.float64)
    norm.fit(x)
    assert torch.allclose(norm.mean, x.mean(0).float()) and torch.allclose(norm.var, x.var(0, unbiased=False).float())


@pytest.mark.filterwarnings(UNKNOWN)
def test_evaluation_reads_no_item_text(coco, tmp_path, monkeypatch):
    model, dm = build(["--config", SEDA_DIGITS, "--data", _data_yaml(coco, tmp_path), "--model.init_args.text_source", "item", *TINY])
    model.prepare_text(dm)
    model.entered_stage = len(model.stages()) - 1  # the SeDA path, as after fit
    model.eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.inference_logits(x)

    def refuse(*args, **kwargs):
        raise AssertionError("per-item text read at evaluation")

    monkeypatch.setattr(model, "text_target", refuse)
    monkeypatch.setattr(type(dm), "item_texts", refuse)
    with torch.no_grad():
        model.item_raw.normal_()
        assert torch.equal(model.inference_logits(x), before)


def test_item_text_without_a_data_module_that_states_it_is_one_clear_line():
    model, dm = build(["--config", SEDA_DIGITS, "--model.init_args.text_source", "item", *TINY])
    with pytest.raises(LTBenchError, match=r"^SeDA: model.init_args.text_source=item needs per-item training texts, and DigitsLT "
                                           r"states none .*data.init_args.captions"):  # fmt: skip
        model.prepare_text(dm)
    with pytest.raises(LTBenchError, match="model.init_args.text_source: expected one of 'class', 'item', got 'caption'"):
        build(["--config", SEDA_DIGITS, "--model.init_args.text_source", "caption"])


@pytest.mark.filterwarnings(UNKNOWN)
def test_fit_on_coco_lt_with_captions_records_the_item_text_and_tests_without_it(coco, tmp_path, monkeypatch):
    from ltbench.sync_check import NoSyncInSteps

    short = ["--model.init_args.pretrain_epochs", "1", "--model.init_args.learner_epochs", "1", "--model.init_args.translator_epochs", "1",
             "--model.init_args.classifier_epochs", "1", "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "4"]  # fmt: skip
    cfg = ["--config", SEDA_DIGITS, "--model.init_args.text_source", "item", *TINY, *short, *QUIET]
    guarded = ["--trainer.callbacks+=ltbench.sync_check.NoSyncInSteps"]  # the gather by index reads nothing back
    cli = run(["fit", *cfg, *guarded, "--data", _data_yaml(coco, tmp_path), "--run_dir", str(tmp_path / "fit")])
    guard = next(cb for cb in cli.trainer.callbacks if isinstance(cb, NoSyncInSteps))
    assert guard.steps == cli.trainer.global_step == 8 and cli.model.entered_stage == 3  # 4 stages of 2 steps
    rec = json.loads(Path(cli.model.record_path).read_text())
    proto = rec["protocol"]
    assert proto["text_source"] == "item" and proto["item_texts"]["file"] == str(_captions(coco))
    assert proto["item_texts"]["texts"] == sum(map(len, CAPTIONS)) and 0.0 <= rec["metrics"]["mAP"] <= 1.0
    assert torch.allclose(cli.model.item_raw, _by_hand(CAPTIONS), atol=1e-5)
    # test from the checkpoint with the same config after the captions file is gone: evaluation reads no caption
    _captions(coco).unlink()
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    again = run(["test", *cfg, "--data", _data_yaml(coco, tmp_path), "--run_dir", str(tmp_path / "t"), "--ckpt_path", ckpt])
    tested = json.loads(Path(again.model.record_path).read_text())
    assert tested["metrics"] == rec["metrics"] and tested["protocol"]["item_texts"]["read"] is False
    assert np.isfinite(rec["metrics"]["mAP"])


def _printed(config: str, capsys) -> dict:
    with pytest.raises(SystemExit):
        run(["fit", "--config", str(REPO / "configs" / config), "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_captions_config_is_the_coco_lt_recipe_with_item_text(capsys):
    plain, captions = _printed("seda_coco_lt.yaml", capsys), _printed("seda_coco_lt_captions.yaml", capsys)
    assert captions["data"]["init_args"].pop("captions") == "data/coco/annotations/captions_train2017.json"
    assert captions["model"]["init_args"].pop("text_source") == "item" and plain["model"]["init_args"].pop("text_source") == "class"
    plain["data"]["init_args"].pop("captions")
    assert captions == plain
