"""Question-answer training data from each source (webdataset .json, parquet columns, LLaVA-style conversations)
through the real loader to the model inputs: each sample's own prompt, labels on its answer only; mixed batches cut
for generation row by row; bad questions skipped and counted."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from theworld import TheWorld
from theworld.data.parquet import ParquetURLSource
from theworld.data.processing import TheWorldProcessor, load_gemma_processor
from theworld.data.webdataset import WebDatasetSource, shard_writer
from theworld.lit.datamodule import SampleTransform
from theworld.loss import IGNORE_INDEX
from theworld.prompts import multiple_choice_prompt
from theworld.testing.synthetic import encode_image, make_key, render_sample, sample_rng

# (the sample's .json or row, the prompt and answer the model must see; None: a caption answering data.prompt)
QUESTIONS = [
    ({"question": "What colour is the shape?", "answer": "red"}, ("What colour is the shape?", "red")),
    ({"question": "Which shape is larger?", "choices": ["the left one", "the right one"], "answer": "the right one"},
     (multiple_choice_prompt("Which shape is larger?", ["the left one", "the right one"]), "(B)")),
    ({"question": "Is it round?", "choices": ["yes", "no"], "answer": "(A)"},
     (multiple_choice_prompt("Is it round?", ["yes", "no"]), "(A)")),
]
CONVERSATION = ([{"from": "human", "value": "<image>\nWhat is drawn here?"}, {"from": "gpt", "value": "A star."}],
                ("What is drawn here?", "A star."))
# (a bad sample's .json, the reason it is counted under)
BAD = [
    ({"question": "What colour is it?"}, "missing_answer"),
    ({"question": "  ", "answer": "red"}, "empty_question"),
    ({"question": "Which?", "choices": ["this", "that"], "answer": "neither"}, "answer_not_a_choice"),
    ({"conversations": CONVERSATION[0] * 2}, "multi_turn"),
    ({"conversations": [{"from": "human", "value": "<image>\nAnd?"}]}, "missing_answer"),
]


@pytest.fixture(scope="module")
def processor(tiny_models):
    return TheWorldProcessor(load_gemma_processor(str(tiny_models[0])), world_tokens=16, world_image_size=64,
                             gemma_image_tokens=False)


def image_of(index):
    return render_sample(sample_rng(5, index))


def write_shard(path, metas):
    """One shard: sample i has image i, its caption as .txt, and ``metas[i]`` (if not None) as its .json."""
    with shard_writer(str(path)) as writer:
        for index, meta in enumerate(metas):
            image, caption = image_of(index)
            members = {"__key__": make_key(index), "jpg": encode_image(image), "txt": caption.encode()}
            if meta is not None:
                members["json"] = json.dumps(meta).encode()
            writer.write(members)
    return str(path)


def loaded(source, processor):
    """The batches the training loader makes of ``source``: worker processes, SampleTransform, the collate."""
    source.transform = SampleTransform(processor)
    loader = StatefulDataLoader(source, batch_size=4, num_workers=1, collate_fn=processor.collate)
    return list(loader)


def assert_inputs(batch, expected, processor):
    """Each row is exactly the processor's example for its image, prompt and answer; labels on the answer only."""
    for row, (index, prompt, answer) in enumerate(expected):
        want = processor(image_of(index)[0], caption=answer, prompt=prompt)
        n = len(want["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], want["input_ids"]), f"row {row}: {prompt!r}"
        labels = batch["labels"][row]
        answer_ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"] + [processor.end_of_turn_id]
        assert labels[labels != IGNORE_INDEX].tolist() == answer_ids, f"row {row}: labels on {answer!r} only"
        assert batch["caption"][row] == answer


def test_webdataset_questions_reach_the_model_inputs(tmp_path, processor):
    metas = [meta for meta, _ in QUESTIONS] + [{"conversations": CONVERSATION[0]}, None, {"uid": "not-a-question"}]
    shard = write_shard(tmp_path / "qa-00000.tar", metas)
    (first, second) = loaded(WebDatasetSource(shard), processor)
    captions = [(i, processor.prompt, image_of(i)[1]) for i in (4, 5)]  # no question: the caption, as before
    expected = [(i, *want) for i, (_, want) in enumerate(QUESTIONS)] + [(3, *CONVERSATION[1])] + captions
    assert_inputs(first, expected[:4], processor)
    assert_inputs(second, expected[4:], processor)


def test_parquet_question_columns_with_embedded_images_and_urls(tmp_path, processor, serve):
    (tmp_path / "images").mkdir()
    url = serve(tmp_path / "images")
    rows = []
    for index, (meta, _) in enumerate(QUESTIONS):
        data = encode_image(image_of(index)[0])
        (tmp_path / "images" / f"{index}.jpg").write_bytes(data)
        rows.append({"query": meta["question"], "reply": meta["answer"], "options": meta.get("choices"),
                     "image": {"bytes": data, "path": None}, "url": f"{url}/{index}.jpg"})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet")
    expected = [(i, *want) for i, (_, want) in enumerate(QUESTIONS)]
    columns = dict(question_column="query", answer_column="reply", choices_column="options")
    for image in ({"image_column": "image"}, {}):  # embedded, then downloaded by URL
        (batch,) = loaded(ParquetURLSource(str(tmp_path / "qa.parquet"), **columns, **image), processor)
        assert_inputs(batch, expected, processor)


def test_parquet_llava_conversations(tmp_path, processor):
    rows = [{"id": "0", "image": {"bytes": encode_image(image_of(0)[0]), "path": "0.jpg"},
             "conversations": CONVERSATION[0]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "llava.parquet")
    source = ParquetURLSource(str(tmp_path / "llava.parquet"), conversations_column="conversations",
                              image_column="image")
    (batch,) = loaded(source, processor)
    assert_inputs(batch, [(0, *CONVERSATION[1])], processor)


def test_bad_questions_are_skipped_and_counted_by_reason(tmp_path, processor):
    metas = [meta for meta, _ in BAD] + [QUESTIONS[0][0]]
    shard = write_shard(tmp_path / "bad-00000.tar", metas)
    batches = loaded(WebDatasetSource(shard), processor)
    assert [key for batch in batches for key in batch["key"]] == [make_key(len(BAD))], "only the good question"
    skipped = Counter()
    for batch in batches:
        for counts in batch["skipped"]:
            skipped.update(counts)
    assert skipped == Counter(reason for _, reason in BAD)


def test_a_mixed_batch_is_cut_for_generation_row_by_row(tiny_models, processor):
    """Captions beside questions of other lengths: ``prompt_only`` gives each row its own prompt, left-padded, and
    generating the batch gives what generating each row alone gives."""
    torch.manual_seed(0)
    model = TheWorld(str(tiny_models[0]), str(tiny_models[1]), world_image_size=64, gemma_image_tokens=False).eval()
    prompts = [None, QUESTIONS[1][1][0], "Short?", None]
    examples = [processor(image_of(i)[0], caption="an answer of some length" if i % 2 else "yes", prompt=prompt)
                for i, prompt in enumerate(prompts)]
    cut = processor.prompt_only(processor.collate(examples))
    alone = processor.collate([processor(image_of(i)[0], prompt=prompt) for i, prompt in enumerate(prompts)],
                              padding_side="left")
    for key in ("input_ids", "segment_ids", "attention_mask", "world_pixels"):
        assert torch.equal(cut[key], alone[key]), key
    together = model.generate_from_batch(cut, max_new_tokens=6)
    one_by_one = [model.generate([image_of(i)[0]], prompt=prompt, max_new_tokens=6)[0]
                  for i, prompt in enumerate(prompts)]
    assert together == one_by_one


def test_a_latent_cache_keeps_each_question_and_its_answer(tiny_models, tmp_path):
    """`theworld cache_latents` over question-answer shards: the cached samples ask what the originals asked."""
    from theworld.config import TheWorldConfig
    from theworld.latent_cache import write_latent_cache

    metas = [meta for meta, _ in QUESTIONS] + [{"conversations": CONVERSATION[0]}, None]
    shard = write_shard(tmp_path / "qa-00000.tar", metas)
    config = TheWorldConfig(gemma_model_name=str(tiny_models[0]), cosmos_model_name=str(tiny_models[1]),
                            world_image_size=64, world_patch_size=2)
    write_latent_cache(config, WebDatasetSource(shard), tmp_path / "cache", batch_size=4, num_workers=0)
    originals = {s["key"]: (s["prompt"], s["text"]) for s in WebDatasetSource(shard)}
    cached = {s["key"]: (s["prompt"], s["text"]) for s in WebDatasetSource(str(tmp_path / "cache"))}
    assert cached == originals and originals[make_key(len(metas) - 1)][0] is None
