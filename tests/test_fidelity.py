"""The fused model against plain Gemma 3 where it can go wrong: tiny models with Gemma 3's real structure
(sliding + full layers, a window that cuts, a non-zero image projector, newline merges), the prompt's
tokenisation, world-token attention, the new tokens' embeddings, and no cache or gradient buffers where none
are needed."""

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoProcessor, Gemma3ForConditionalGeneration

from theworld import TheWorld, TheWorldConfig
from theworld.data.processing import SEG_IMAGE, SEG_WORLD
from theworld.loss import linear_cross_entropy


def make_model(tiny_models, **options):
    torch.manual_seed(0)
    return TheWorld(*tiny_models, world_image_size=64, **options).eval()


def images(n=2):
    return [Image.new("RGB", (96, 80), c) for c in [(250, 10, 10), (10, 200, 40), (20, 20, 240)][:n]]


def batch_for(model, captions=("a red circle on a blue background", "a green square on a white background")):
    proc = model.processor
    return proc.collate([proc(image, caption=c) for image, c in zip(images(len(captions)), captions)])


def test_tiny_gemma_has_gemma3s_structure_where_a_test_can_tell(tiny_models):
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_models[0])
    text = gemma.config.text_config
    assert {"sliding_attention", "full_attention"} <= set(text.layer_types)
    model = make_model(tiny_models)
    batch = batch_for(model)
    assert batch["input_ids"].shape[1] > 2 * text.sliding_window, "the window must cut the test sequences"
    with torch.no_grad():
        features = gemma.model.get_image_features(batch["pixel_values"]).pooler_output
    assert features.abs().mean() > 0.1, "a zero projector would hide every image-path bug"


def test_ids_without_the_world_block_are_gemma3_processors_ids(tiny_models):
    """Tokenised in one piece: "user\\n" + "\\n\\n<start_of_image>" merge into one newline token, as Gemma's do."""
    proc = AutoProcessor.from_pretrained(tiny_models[0])
    prompt = "Describe the image."
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    reference = proc(text=text, images=[images(1)[0]], add_special_tokens=False)["input_ids"][0]
    plain = make_model(tiny_models, enable_world=False).processor(images(1)[0], prompt=prompt)
    assert plain["input_ids"].tolist() == reference
    fused = make_model(tiny_models).processor(images(1)[0], prompt=prompt)
    in_world = (fused["segment_ids"] >= 2) & (fused["segment_ids"] <= 4)
    assert fused["input_ids"][~in_world].tolist() == reference
    boi = proc.tokenizer.convert_tokens_to_ids(proc.boi_token)
    assert fused["input_ids"][in_world.nonzero().max() + 1] == boi, "the world block sits right before the image"


def test_enable_world_false_matches_plain_gemma3_beyond_the_sliding_window(tiny_models):
    model = make_model(tiny_models, enable_world=False)
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_models[0]).eval()
    batch = batch_for(model)
    with torch.no_grad():
        ours = model(**batch, return_logits=True)["logits"]
        plain = gemma(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                      attention_mask=batch["attention_mask"], token_type_ids=(batch["segment_ids"] == SEG_IMAGE).long(),
                      ).logits
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours[real], plain[real], atol=1e-5)


def world_hidden(model, batch):
    with torch.no_grad():
        hidden = model.hidden_states(batch["input_ids"], batch["segment_ids"], batch["attention_mask"],
                                     batch["pixel_values"], batch["world_pixels"])
    return hidden[batch["segment_ids"] == SEG_WORLD].view(len(hidden), -1, hidden.shape[-1])


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_world_tokens_see_the_whole_world_block_only_when_bidirectional(tiny_models, attention):
    model = make_model(tiny_models, world_attention=attention)
    batch = batch_for(model)
    before = world_hidden(model, batch)
    # Change only the last world token's embedding: does the first world token notice?
    last = (batch["segment_ids"][0] == SEG_WORLD).nonzero().max()
    original = model.embed

    def embed_with_a_changed_last_world_token(*args, **kwargs):
        embeds = original(*args, **kwargs).clone()
        embeds[:, last] += 3.0
        return embeds

    model.embed = embed_with_a_changed_last_world_token
    after = world_hidden(model, batch)
    first_changed = not torch.allclose(before[:, 0], after[:, 0], atol=1e-6)
    assert first_changed == (attention == "bidirectional")


def test_the_world_block_is_a_block_of_its_own_not_merged_with_the_image_block(tiny_models):
    """World tokens come before Gemma's image: bidirectional within the world block must not let them see it."""
    model = make_model(tiny_models, world_attention="bidirectional")
    batch = batch_for(model)
    before = world_hidden(model, batch)
    batch["pixel_values"] = torch.randn_like(batch["pixel_values"])
    assert torch.allclose(world_hidden(model, batch), before, atol=1e-6)
    blocks = model.bidirectional_blocks(batch["segment_ids"])[0]
    runs = (blocks[1:] == 1) & (blocks[:-1] == 0)
    assert int(runs.sum()) == 2, "world and image blocks are two separate runs"


def test_world_attention_is_recorded_and_old_checkpoints_stay_causal(tmp_path):
    TheWorldConfig(world_attention="causal").save(tmp_path)
    assert '"world_attention": "causal"' in (tmp_path / "config.json").read_text()
    legacy = TheWorldConfig().to_dict()
    del legacy["world_attention"]
    assert TheWorldConfig.from_dict(legacy).world_attention == "causal"


def test_the_new_tokens_start_distinct_and_at_the_scale_of_text_embeddings(tiny_models):
    model = make_model(tiny_models)
    start, end = model.world_token_embeds
    text = model.gemma.get_input_embeddings()
    text_rms = (text.weight.float().pow(2).mean(-1).sqrt().mean() * text.embed_scale).item()
    for token in (start, end):
        assert 0.5 * text_rms < token.pow(2).mean().sqrt().item() < 2 * text_rms
    assert not torch.allclose(start, end)


def test_the_training_forward_keeps_no_kv_cache(tiny_models, monkeypatch):
    from transformers import DynamicCache

    updates = []
    original = DynamicCache.update
    monkeypatch.setattr(DynamicCache, "update", lambda self, *a, **k: updates.append(1) or original(self, *a, **k))
    model = make_model(tiny_models).train()
    model(**batch_for(model))["loss"].backward()
    assert updates == []
    model.eval().generate(images(1), max_new_tokens=2)
    assert updates, "generation does use the cache (the spy works)"


class AllocatedShapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.shapes.append(tuple(tensor.shape))
        return out


def test_the_loss_allocates_no_weight_gradient_when_gradients_are_off():
    vocab, hidden = 1000, 16
    weight = torch.randn(vocab, hidden, requires_grad=True)
    rows = torch.randn(8, hidden, requires_grad=True)
    targets = torch.randint(0, vocab, (8,))
    with torch.no_grad(), AllocatedShapes() as seen:
        linear_cross_entropy(rows, weight, targets)
    assert (vocab, hidden) not in seen.shapes
    with AllocatedShapes() as seen:
        linear_cross_entropy(rows, weight, targets)[0].backward()
    assert (vocab, hidden) in seen.shapes, "with gradients on, the weight gradient is there (the check works)"
