"""The benchmark loaders (``theworld.benchmarks``) over tiny local folders laid out like the Hub repos: the rows,
tasks, options and answers read, and the errors on a bad layout. No model."""

import shutil

import numpy as np
import pytest
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from support.benchmark_folders import (
    BLINK_FEATURES,
    CV_BENCH_FEATURES,
    VQA_FEATURES,
    blink_folder,
    blink_rows,
    blink_test_rows,
    cv_bench_folder,
    cv_bench_row,
    picture,
    write_hub_folder,
    write_hub_splits,
)

from theworld.benchmarks import benchmark_configs, load_benchmark, load_benchmarks
from theworld.errors import UserError


def test_blink_is_read_with_its_tasks_prompts_and_letters_and_every_image_of_a_question_in_order(tmp_path):
    folder = blink_folder(tmp_path / "blink", count=3, multi_image=2)
    bench = load_benchmark(str(folder), "Relative_Depth")
    assert (bench.format, bench.split, bench.skipped) == ("blink", "val", {})
    first, second = bench.questions[:2]
    assert [q.id for q in bench.questions] == [f"val_Relative_Depth_{n}" for n in range(1, 6)]
    assert (first.task, first.sub_task, first.options, first.answers) == (
        "Relative_Depth", None, ["(A)", "(B)"], ["(B)"])  # BLINK's sub_task names the task again
    assert second.prompt == ("Which point is closer to the camera (1)?\nSelect from the following choices.\n"
                             "(A) A is closer\n(B) B is closer")
    # image_1, image_2.. of each row, in order (the last two rows have two images).
    expected = [[0], [1], [2], [3, 13], [4, 14]]
    assert [[np.array(image).tolist() for image in q.images] for q in bench.questions] == [
        [np.array(picture(n)).tolist() for n in numbers] for numbers in expected]


def test_cv_bench_takes_its_tasks_from_the_task_column_and_the_sources_as_sub_tasks(tmp_path):
    rows = [{"idx": number, "type": "3D", "task": ["Depth", "Distance"][number % 2], "image": picture(number),
             "question": "Which object is closer to the camera?", "choices": ["lamp", "chair", "table"],
             "answer": "(C)", "prompt": "", "filename": f"img/3D/{number}.png", "source": "Omni3D",
             "source_dataset": "SUNRGBD", "source_filename": f"{number}.jpg", "target_class": None,
             "target_size": None, "bbox": [[1.0, 2.0, 3.0, 4.0]]} for number in range(3)]
    folder = write_hub_folder(tmp_path / "cv", "test", {"3D": (rows, CV_BENCH_FEATURES)})
    bench = load_benchmark(str(folder), "3D", limit=2)
    assert (bench.format, bench.split, len(bench.questions)) == ("cv-bench", "test", 2)
    # The limit samples each task: one Depth and one Distance question, whichever of the Depth ones.
    assert sorted((q.task, q.sub_task, q.stratum, q.options, q.answers) for q in bench.questions) == [
        ("Depth", "Omni3D", "Omni3D", ["(A)", "(B)", "(C)"], ["(C)"]),
        ("Distance", "Omni3D", "Omni3D", ["(A)", "(B)", "(C)"], ["(C)"])]


def test_plain_vqa_is_an_open_question(tmp_path):
    rows = [{"image": picture(0), "question": "What colour is the background?", "answer": "red"}]
    bench = load_benchmark(str(write_hub_folder(tmp_path / "vqa", "test", {"colours": (rows, VQA_FEATURES)})),
                           "colours")
    (question,) = bench.questions
    assert (bench.format, question.options, question.answers, question.prompt) == (
        "vqa", [], ["red"], "What colour is the background?")


def test_a_folder_rewritten_in_place_is_read_afresh(tmp_path):
    """datasets' cache keys a local folder by its config and file patterns: a stale cache would give the old rows."""
    blink_folder(tmp_path / "blink", count=2, multi_image=0)
    assert len(load_benchmark(str(tmp_path / "blink"), "Relative_Depth").questions) == 2
    shutil.rmtree(tmp_path / "blink")
    blink_folder(tmp_path / "blink", count=5, multi_image=0)
    assert len(load_benchmark(str(tmp_path / "blink"), "Relative_Depth").questions) == 5


def test_bad_benchmarks_say_what_is_wrong_and_how_to_fix_it(tmp_path, monkeypatch):
    folder = blink_folder(tmp_path / "blink")
    with pytest.raises(UserError, match="no config 'Counting'; its configs are Relative_Depth, Spatial_Relation"):
        load_benchmark(str(folder), "Counting")
    with pytest.raises(UserError, match="no split 'test'; its splits are val"):
        load_benchmark(str(folder), "Relative_Depth", "test")
    rows = [{"picture": picture(0), "text": "a red square"}]
    odd = write_hub_folder(tmp_path / "captions", "test", {
        "default": (rows, Features({"picture": ImageFeature(), "text": Value("string")}))})
    with pytest.raises(UserError, match="in no format theworld reads: its columns are picture, text.*vqa: image, "
                                        "question, answer"):
        load_benchmark(str(odd), "default")
    # A typo under a folder that exists is a path, not a Hub id: said at once, the Hub never asked.
    (tmp_path / "benchmarks").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("datasets.get_dataset_config_names", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(UserError, match="benchmarks/blnk: there is no such folder"):
        load_benchmark("benchmarks/blnk", "Relative_Depth")




def test_load_benchmarks_reads_every_config_in_the_cards_order_or_those_named(tmp_path):
    folder = blink_folder(tmp_path / "blink", count=2, multi_image=1)
    assert benchmark_configs(str(folder)) == ["Relative_Depth", "Spatial_Relation"]
    every = load_benchmarks(str(folder))
    assert [(b.config, b.split, b.format, len(b.questions), b.skipped) for b in every] == [
        ("Relative_Depth", "val", "blink", 3, {}),  # the multi-image question too
        ("Spatial_Relation", "val", "blink", 2, {}),
    ]
    assert [q.task for q in every[1].questions] == ["Spatial_Relation"] * 2
    assert [q.answers for q in every[1].questions] == [["(B)"], ["(A)"]]
    assert every[1].questions[0].sub_task is None, "BLINK's sub_task names the task again"
    named = load_benchmarks(str(folder), ["Spatial_Relation"], limit=1)
    assert [(b.config, len(b.questions)) for b in named] == [("Spatial_Relation", 1)]


def test_an_answer_given_as_the_choice_text_is_scored_as_its_letter(tmp_path):
    rows = blink_rows("Counting", 2)
    rows[0]["answer"], rows[1]["answer"] = "B is closer", " (A) "
    bench = load_benchmark(str(write_hub_folder(tmp_path / "blink", "val", {"Counting": (rows, BLINK_FEATURES)})),
                           "Counting")
    assert [(q.options, q.answers) for q in bench.questions] == [(["(A)", "(B)"], ["(B)"]), (["(A)", "(B)"], ["(A)"])]
    assert all(q.multiple_choice for q in bench.questions)


def test_an_answer_that_is_neither_a_letter_nor_a_choice_names_the_row(tmp_path):
    rows = blink_rows("Counting", 2)
    rows[1]["answer"] = "(C)"
    folder = write_hub_folder(tmp_path / "blink", "val", {"Counting": (rows, BLINK_FEATURES)})
    with pytest.raises(UserError, match=r"question val_Counting_2: the answer '\(C\)' is neither an option letter "
                                        r"\(\(A\), \(B\)\) nor one of the choices"):
        load_benchmark(str(folder), "Counting")


def test_vqa_answers_may_be_a_list_and_a_question_without_an_image_is_counted(tmp_path):
    features = Features({"image": ImageFeature(), "question": Value("string"), "answer": [Value("string")]})
    rows = [{"image": picture(0), "question": "What colour?", "answer": ["red", "crimson"]},
            {"image": None, "question": "What colour?", "answer": ["blue"]}]
    bench = load_benchmark(str(write_hub_folder(tmp_path / "vqa", "val", {"colours": (rows, features)})), "colours")
    assert (bench.format, bench.skipped) == ("vqa", {"questions without an image": 1})
    (question,) = bench.questions
    assert (question.id, question.task, question.options, question.answers) == ("0", "colours", [], ["red", "crimson"])
    assert not question.multiple_choice


def test_the_split_is_chosen_as_published_or_must_be_named(tmp_path):
    rows = [{"image": picture(0), "question": "What colour?", "answer": "red"}]
    folder = tmp_path / "two-splits"
    (folder / "default").mkdir(parents=True)
    for split in ("train", "dev"):
        Dataset.from_list(rows, features=VQA_FEATURES).to_parquet(str(folder / "default" / f"{split}-0.parquet"))
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                      "    path: default/train-*\n  - split: dev\n    path: default/dev-*\n---\n")
    with pytest.raises(UserError, match="has the splits train, dev; choose one with --split"):
        load_benchmark(str(folder), "default")
    assert load_benchmark(str(folder), "default", "dev").split == "dev"
    one = write_hub_folder(tmp_path / "one-split", "train", {"default": (rows, VQA_FEATURES)})
    assert load_benchmark(str(one), "default").split == "train"  # the one split there is, whatever its name


def test_the_datasets_own_prompt_is_asked_and_hidden_test_answers_make_questions_without_answers(tmp_path):
    val = blink_rows("Counting", 2)
    val[0]["prompt"] = "How many blue floats are there?\nSelect from the following choices.\n(A) 0\n(B) 3"
    test = blink_test_rows("Counting", 3)
    folder = write_hub_splits(tmp_path / "blink", {"Counting": {"val": (val, BLINK_FEATURES),
                                                                "test": (test, BLINK_FEATURES)}})
    bench = load_benchmark(str(folder), "Counting")
    assert bench.split == "val" and bench.answered
    assert bench.questions[0].prompt == val[0]["prompt"]  # the column, not a prompt rebuilt from question + choices
    hidden = load_benchmark(str(folder), "Counting", "test")
    assert [(q.id, q.answers, q.options) for q in hidden.questions] == [
        (f"test_Counting_{n}", [], ["(A)", "(B)"]) for n in (1, 2, 3)]
    assert not hidden.answered


def test_cv_bench_as_on_the_hub_counts_its_default_config_once(tmp_path):
    rows_2d = [cv_bench_row(n, "2D", ["Count", "Relation"][n % 2], ["ADE20K", "COCO"][n % 2]) for n in range(4)]
    rows_3d = [cv_bench_row(n, "3D", ["Depth", "Distance"][n % 2], "Omni3D") for n in range(4, 7)]
    folder = cv_bench_folder(tmp_path / "CV-Bench", rows_2d, rows_3d)
    assert benchmark_configs(str(folder)) == ["default", "2D", "3D"]
    every = load_benchmarks(str(folder))
    assert [(b.config, len(b.questions)) for b in every] == [("2D", 4), ("3D", 3)]  # 7 questions, each once
    assert every[0].notes == ["config default left out: it repeats 2D, 3D (name it in --configs to evaluate it)"]
    assert [(b.config, len(b.questions)) for b in load_benchmarks(str(folder), ["default"])] == [("default", 7)]


def test_limit_is_a_seeded_sample_stratified_by_task(tmp_path):
    rows = [cv_bench_row(n, "2D", "Count" if n < 30 else "Relation", "ADE20K") for n in range(40)]
    folder = cv_bench_folder(tmp_path / "CV-Bench", rows, [cv_bench_row(40, "3D", "Depth", "Omni3D")])

    def sample(seed):
        return [int(q.id) for q in load_benchmark(str(folder), "2D", limit=8, seed=seed).questions]

    first = sample(0)
    assert len(first) == 8 and first == sorted(first)
    assert sum(n < 30 for n in first) == 6 and sum(n >= 30 for n in first) == 2  # 3:1 as in the config
    assert first == sample(0) and first != sample(1)
    assert first[:6] != list(range(6)), "a sample, not the first rows"
    # Fewer than the tasks: one question of as many tasks as the limit allows.
    assert len(load_benchmark(str(folder), "2D", limit=1).questions) == 1
