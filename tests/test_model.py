"""The model's contract: world layout, labels, loss, freezing, dtypes, baseline and generation."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from theworld import TheWorld
from theworld.data.processing import (
    IGNORE_INDEX,
    SEG_IMAGE,
    SEG_WORLD,
    SEG_WORLD_END,
    SEG_WORLD_START,
    TheWorldProcessor,
)


def make_model(tiny_models, **options):
    gemma, cosmos = tiny_models
    options.setdefault("world_image_size", 64)
    torch.manual_seed(0)
    return TheWorld(gemma, cosmos, **options)


def shapes(n=2):
    return [Image.new("RGB", (96, 80), c) for c in [(250, 10, 10), (10, 200, 40), (20, 20, 240)][:n]]


@pytest.fixture(scope="module")
def model(tiny_models):
    return make_model(tiny_models)


def batch_for(model, captions=("a red circle", "a green square on a blue background")):
    proc = model.processor
    return proc.collate([proc(img, caption=c) for img, c in zip(shapes(len(captions)), captions)])


def test_vae_input_is_scaled_to_minus_one_one(model):
    proc = model.processor
    white = proc.world_pixels(Image.new("RGB", (50, 70), (255, 255, 255)))
    black = proc.world_pixels(Image.new("RGB", (50, 70), (0, 0, 0)))
    assert white.shape == (3, 64, 64)
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))


def test_latents_are_normalised_with_the_vae_statistics(model):
    enc = model.world_encoder
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    raw = enc.vae.encode(images.unsqueeze(2)).latent_dist.mode()[:, :, 0]
    mean = torch.tensor(enc.vae.config.latents_mean).view(1, -1, 1, 1)
    std = torch.tensor(enc.vae.config.latents_std).view(1, -1, 1, 1)
    assert torch.allclose(enc.encode_latents(images), (raw - mean) / std, atol=1e-5)


def test_world_tokens_sit_exactly_between_the_two_new_tokens(model):
    batch = batch_for(model)
    seg = batch["segment_ids"][0]
    world = (seg == SEG_WORLD).nonzero().flatten()
    start = (seg == SEG_WORLD_START).nonzero().flatten()
    end = (seg == SEG_WORLD_END).nonzero().flatten()
    assert len(start) == len(end) == 1 and len(world) == model.processor.world_tokens
    assert torch.equal(world, torch.arange(start.item() + 1, end.item()))
    # ... and Gemma's image block follows the world block
    assert (seg == SEG_IMAGE).nonzero().min() > end.item()
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], batch["segment_ids"], batch["pixel_values"], batch["world_pixels"])
        world_tokens = model.encode_world(batch["world_pixels"])
    assert torch.allclose(embeds[0, start.item()], model.world_token_embeds[0])
    assert torch.allclose(embeds[0, end.item()], model.world_token_embeds[1])
    assert torch.allclose(embeds[0, world], world_tokens[0])


@pytest.mark.parametrize("size,patch,tokens,channels", [(448, 2, 784, 64), (512, 1, 4096, 16)])
def test_world_token_count(tiny_models, size, patch, tokens, channels):
    model = make_model(tiny_models, world_image_size=size, world_patch_size=patch)
    assert model.processor.world_tokens == tokens
    with torch.no_grad():
        latents = model.world_encoder(torch.zeros(1, 3, size, size))
    assert latents.shape == (1, tokens, channels)


def test_labels_cover_only_the_answer(model):
    proc = model.processor
    caption = "a red circle on a blue background"
    example = proc(shapes(1)[0], caption=caption)
    answer = proc.tokenizer(caption, add_special_tokens=False)["input_ids"] + [proc.end_of_turn_id]
    labelled = example["labels"][example["labels"] != IGNORE_INDEX].tolist()
    assert labelled == answer
    assert example["input_ids"][-len(answer):].tolist() == answer
    assert (example["labels"][: -len(answer)] == IGNORE_INDEX).all()


def test_sliced_logits_loss_equals_full_logits_loss(model):
    batch = batch_for(model)
    with torch.no_grad():
        out = model(**batch, return_logits=True)
    full = F.cross_entropy(
        out["logits"][:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(out["loss"], full, atol=1e-5)


@pytest.mark.parametrize("vision,language,vae", [(True, True, True), (False, True, True), (True, False, True),
                                                  (True, True, False)])
def test_freeze_flags_set_exactly_the_intended_requires_grad(tiny_models, vision, language, vae):
    model = make_model(tiny_models, freeze_gemma_vision=vision, freeze_gemma_language=language,
                       freeze_cosmos_vae=vae)
    expect = {
        "gemma.model.vision_tower.": not vision,
        "gemma.model.multi_modal_projector.": not vision,
        "gemma.model.language_model.": not language,
        "world_encoder.": not vae,
        "projector.": True,
        "world_token_embeds": True,
    }
    for name, param in model.named_parameters():
        prefix = next(p for p in expect if name.startswith(p))
        # The VAE's temporal convolutions see no input from one-frame videos and stay frozen.
        assert param.requires_grad == (expect[prefix] and "time_conv" not in name), name
    assert model.gemma.lm_head.weight.requires_grad == (not language)


def test_every_trainable_parameter_gets_a_gradient(tiny_models):
    """What DDP without find_unused_parameters relies on, with every part unfrozen."""
    model = make_model(tiny_models, freeze_gemma_vision=False, freeze_gemma_language=False, freeze_cosmos_vae=False)
    model(**batch_for(model))["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_trainable_parameters_are_fp32_with_bf16_frozen_weights(tiny_models):
    model = make_model(tiny_models, frozen_dtype="bfloat16", freeze_gemma_vision=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    batch = batch_for(model)
    model(**batch)["loss"].backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.projector.parameters())


def test_enable_world_false_matches_plain_gemma3(tiny_models):
    from transformers import Gemma3ForConditionalGeneration

    model = make_model(tiny_models, enable_world=False)
    assert model.world_encoder is None and model.processor.world_tokens == 0
    batch = batch_for(model)
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_models[0])
    with torch.no_grad():
        ours = model(**batch, return_logits=True)["logits"]
        plain = gemma(
            input_ids=batch["input_ids"],
            pixel_values=batch["pixel_values"],
            attention_mask=batch["attention_mask"],
            token_type_ids=(batch["segment_ids"] == SEG_IMAGE).long(),
        ).logits
    assert torch.allclose(ours, plain, atol=1e-5)


def test_changing_the_projector_changes_generated_logits(tiny_models):
    model = make_model(tiny_models).eval()
    texts, before = model.generate(shapes(2), max_new_tokens=4, return_scores=True)
    assert len(texts) == 2 and before.shape[0] == 2
    with torch.no_grad():
        model.projector.net[2].weight.add_(torch.randn_like(model.projector.net[2].weight))
    _, after = model.generate(shapes(2), max_new_tokens=4, return_scores=True)
    assert not torch.allclose(before[:, 0], after[:, 0])


def test_generation_with_kv_cache_matches_a_full_forward(tiny_models):
    """The first decoded step's logits equal the full (no-cache) forward's last-position logits."""
    model = make_model(tiny_models).eval()
    images = shapes(1)
    _, scores = model.generate(images, max_new_tokens=2, return_scores=True)
    proc = model.processor
    first = scores[0, 0].argmax()
    batch = proc.collate([proc(images[0])])
    del batch["labels"]
    batch["input_ids"] = torch.cat([batch["input_ids"], first.view(1, 1)], dim=1)
    batch["segment_ids"] = torch.cat([batch["segment_ids"], torch.zeros(1, 1, dtype=torch.uint8)], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    with torch.no_grad():
        logits = model(**batch, return_logits=True)["logits"]
    assert torch.allclose(logits[0, -2], scores[0, 0], atol=1e-4)
    assert torch.allclose(logits[0, -1], scores[0, 1], atol=1e-4)


def test_unknown_option_is_a_clear_error(tiny_models):
    with pytest.raises(TypeError, match="world_imag_size"):
        TheWorld(*tiny_models, world_imag_size=64)


def test_processor_from_config_needs_no_weights(model):
    proc = TheWorldProcessor.from_config(model.config)
    assert proc.world_tokens == model.processor.world_tokens


def test_world_position_embedding_tells_the_places_of_the_same_content_apart(tiny_models, tmp_path):
    """Without it a world token's value is a function of its latent patch alone (where the patch sits reaches Gemma
    only through RoPE's effect on attention scores); with it, the same patch at two places gives two tokens."""
    latents = torch.randn(1, 16, 64).expand(2, 16, 64).clone()
    latents[1] = latents[0].flip(0)  # the same patches in the opposite order

    def placed_apart(model) -> bool:
        with torch.no_grad():
            tokens = model.projector(latents)
        return not torch.allclose(tokens[1].flip(0), tokens[0], atol=1e-6)

    assert not placed_apart(make_model(tiny_models))
    model = make_model(tiny_models, world_position_embedding=True)
    assert model.trainable_state_dict()["projector.position"].shape == (model.num_world_tokens, 64)
    assert placed_apart(model)
    # Saved with its config, it loads as it was; a config.json from before the option loads without it.
    from theworld.checkpoint import save_weights

    (tmp_path / "pos").mkdir()
    save_weights(model.trainable_state_dict(), model.config, tmp_path / "pos")
    loaded = TheWorld.from_pretrained(tmp_path / "pos")
    assert torch.equal(loaded.projector.position, model.projector.position)


def test_a_processor_keeps_a_bounded_number_of_rendered_prompts(model, monkeypatch):
    """Question-answer data brings a prompt per sample: the rendered-template cache of each worker stays bounded,
    and a prompt rendered again comes out the same."""
    import copy

    from theworld.data import processing

    monkeypatch.setattr(processing, "PROMPT_CACHE_SIZE", 4)
    proc = copy.copy(model.processor)
    proc._prompts = {}
    image = shapes(1)[0]
    first = proc(image, prompt="question 0")["input_ids"]
    for index in range(10):
        proc(image, prompt=f"question {index}")
    assert len(proc._prompts) == 4
    assert torch.equal(proc(image, prompt="question 0")["input_ids"], first)
