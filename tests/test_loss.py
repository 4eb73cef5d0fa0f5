"""The answer-token loss: same values and gradients as full logits, chunked, and free of host syncs."""

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from PIL import Image

from theworld import TheWorld
from theworld.loss import IGNORE_INDEX, labelled_rows, linear_cross_entropy


def reference_loss(hidden, weight, targets):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("weight_trainable", [False, True])
def test_chunked_loss_and_gradients_equal_full_logits(weight_trainable):
    torch.manual_seed(0)
    vocab, hidden_size, rows = 1000, 32, 37
    weight = torch.randn(vocab, hidden_size, requires_grad=weight_trainable)
    targets = torch.randint(0, vocab, (rows,))
    targets[[3, 10, 36]] = IGNORE_INDEX  # padding rows of the (B, K) layout
    hidden = torch.randn(rows, hidden_size, requires_grad=True)

    # 4 KB of float32 logits a chunk: one row at a time, so every chunk boundary is crossed.
    loss, num_tokens = linear_cross_entropy(hidden, weight, targets, chunk_bytes=4 * vocab)
    (loss * 3).backward()  # a non-unit upstream gradient must scale the precomputed gradients
    expected_hidden = hidden.detach().clone().requires_grad_()
    expected_weight = weight.detach().clone().requires_grad_(weight_trainable)
    expected = reference_loss(expected_hidden, expected_weight, targets)
    (expected * 3).backward()

    assert num_tokens.item() == rows - 3
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(hidden.grad, expected_hidden.grad)
    if weight_trainable:
        torch.testing.assert_close(weight.grad, expected_weight.grad)
    else:
        assert weight.grad is None


def test_chunked_loss_under_bf16_autocast_matches_full_logits():
    torch.manual_seed(0)
    weight = torch.randn(500, 64, dtype=torch.bfloat16)
    hidden = torch.randn(20, 64, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 500, (20,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_bytes=4 * 500 * 7)
    loss.backward()
    expected_hidden = hidden.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference_loss(expected_hidden, weight, targets)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(hidden.grad, expected_hidden.grad, atol=1e-3, rtol=2e-2)


def test_labelled_rows_list_each_rows_labels_in_order_padded_with_ignore():
    labels = torch.full((3, 8), IGNORE_INDEX)
    labels[0, 5:8] = torch.tensor([11, 12, 13])
    labels[1, 2:4] = torch.tensor([21, 22])
    # row 2 has no labels at all (e.g. a prompt-only example)
    positions, targets = labelled_rows(labels)
    assert targets.tolist() == [11, 12, 13, 21, 22, IGNORE_INDEX] + [IGNORE_INDEX] * 3
    # hidden state b * L + p predicts labels[b, p + 1]
    assert positions.tolist()[:5] == [4, 5, 6, 8 + 1, 8 + 2]
    hidden_index = torch.arange(3 * 8)
    selected = labels[:, 1:] != IGNORE_INDEX
    assert hidden_index.view(3, 8)[:, :-1][selected].tolist() == positions[targets != IGNORE_INDEX].tolist()


@pytest.fixture(scope="module")
def model_and_batch(tiny_models):
    gemma, cosmos = tiny_models
    torch.manual_seed(0)
    model = TheWorld(gemma, cosmos, world_image_size=64)
    proc = model.processor
    images = [Image.new("RGB", (80, 72), color) for color in [(200, 10, 10), (10, 10, 200)]]
    batch = proc.collate([proc(img, caption=c) for img, c in zip(images, ["a red", "a blue square on grey"])])
    return model, {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def test_loss_from_collated_positions_equals_loss_from_labels_alone(model_and_batch):
    model, batch = model_and_batch
    with torch.no_grad():
        from_collate = model(**batch)
        labels_only = model(**{k: v for k, v in batch.items() if not k.startswith("label_")})
    torch.testing.assert_close(from_collate["loss"], labels_only["loss"])
    assert from_collate["num_tokens"].item() == (batch["labels"][:, 1:] != IGNORE_INDEX).sum().item()


def test_training_forward_is_one_graph_without_host_syncs(model_and_batch):
    """A data-dependent shape (boolean indexing, nonzero, masked_select, .item()) breaks the graph: on a
    GPU each one is a host sync that stalls the step. The collated batch's forward, VAE and loss
    included, must trace as one graph."""
    model, batch = model_and_batch
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**{k: v for k, v in batch.items() if k != "labels"})
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1
