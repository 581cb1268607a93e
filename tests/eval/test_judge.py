"""The LLM judge against a local scripted OpenAI-compatible server: scoring rules, retries, resume, cache."""

from __future__ import annotations

import argparse
import json
import random
import socket
import time

import pytest

from enel.errors import ConfigError, EnelError
from enel.eval import judge as J
from enel.data import prompts as P
from enel.eval.results import ResultsFile, make_record, write_results
from fake_openai import Action, FakeOpenAI, user_text

SHORT_WAIT = {"retry-after-ms": "10"}  # the server asks for 10 ms between retries: fast tests



@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    for var in (J.ENV_BASE_URL, J.ENV_MODEL, J.ENV_API_KEY, "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ENEL_CACHE", str(tmp_path / "enel-cache"))


def write(tmp_path, records, prompt="What is this?", name="res.json"):
    return write_results(tmp_path / name, ResultsFile(prompt=prompt, results=records))


def judge(path, server, eval_type=None, **kw):
    kw.setdefault("max_retries", 3)
    kw.setdefault("cache_dir", None)
    return J.run_judge(path, eval_type, base_url=server.base_url, model=kw.pop("model", "fake-judge"), **kw)


def successes_per_prompt(server):
    counts = {}
    for body in server.sent(200):
        counts[user_text(body)] = counts.get(user_text(body), 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------- prompts
def test_prompt_lists_and_classes():
    assert P.PROMPT_LISTS == ("What is this?", "This is an object of ", "Caption this 3D model in detail.")
    assert len(P.MODELNET40_CLASSES) == 40 and len(set(P.MODELNET40_CLASSES)) == 40
    assert list(P.MODELNET40_CLASSES) == sorted(P.MODELNET40_CLASSES)
    # the indices the close-set prompt's own examples rely on
    assert (P.MODELNET40_CLASSES[7], P.MODELNET40_CLASSES[26], P.MODELNET40_CLASSES[33]) == ("car", "plant", "table")
    for name in ("flower pot", "night stand", "range hood", "tv stand", "glass box"):
        assert name in P.MODELNET40_CLASSES


def test_judge_messages_fill_the_templates():
    msg = P.open_free_form_messages("A {red} chair", "chair")
    assert msg[0]["role"] == "user" and msg[0]["content"].endswith("Input: 1. A {red} chair 2. chair\nOutput: ")
    close = P.close_set_messages("a car")[0]["content"]
    assert "0: airplane\n1: bathtub" in close and "39: xbox\nReply with" in close
    assert close.endswith("Now analyze the following:\nInput: a car\nOutput: ")
    cap = P.captioning_messages("A skeleton", "A robot")[0]["content"]
    assert cap.endswith("Human: A skeleton\nModel: A robot\nOutput: ")
    qa = P.qa_messages("What is it?", "Knowledge", "a cup", "a mug")
    assert qa[0] == {"role": "system", "content": "You are a helpful AI assistant."}
    assert qa[1]["content"].count("confidence score: ") == 4
    assert "answer from model: a cup,\n" in qa[1]["content"] and "answer from label: a mug.\n" in qa[1]["content"]


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("reply, verdict", [("T#same", "T"), (" f#no", "F"), ("True", "T"), ("Maybe", "INVALID"),
                                            ("", "INVALID")])
def test_parse_open_free_form(reply, verdict):
    assert J.parse_open_free_form(reply)[0] == verdict


@pytest.mark.parametrize("reply, index", [("7#car#Closest", 7), ("The answer: 8#chair#legs", 8), ("39#xbox#", 39),
                                          ("-1#NA#Cannot infer.", -1), ("3#NA#x", -1), ("40#foo#bar", -1),
                                          ("chair", -1), ("", -1)])
def test_parse_close_set(reply, index):
    assert J.parse_close_set(reply)[0] == index


@pytest.mark.parametrize("reply, score", [("85#most aspects", 85), ("Score 60#ok", 60), ("0#none", 0),
                                          ("100#all", 100), ("150#too much", -1), ("great", -1), ("#x", -1)])
def test_parse_caption_score(reply, score):
    assert J.parse_caption_score(reply)[0] == score


@pytest.mark.parametrize("reply, score", [("85", 85.0), (" 42.5\n", 42.5), ("85 points", None), ("101", None),
                                          ("-3", None)])
def test_parse_qa_score(reply, score):
    assert J.parse_qa_score(reply) == score


def test_modelnet_random_class_rule_by_hand():
    rng = random.Random(0)
    assert (rng.choice(range(40)), rng.choice(range(40))) == (24, 26)  # Python's seed-0 stream, pinned
    records = [make_record(i, gt, "x", label_name=P.MODELNET40_CLASSES[gt]) for i, gt in
               enumerate([8, 7, 0, 24, 5])]
    replies = [[{"content": c}] for c in ["8#chair#a", "7#car#b", "3#bench#c", "unsure", "-1#NA#Cannot infer"]]
    summary, items = J.score_close_set(records, replies)
    # invalid #1 (gt 24) draws 24 → correct by chance; invalid #2 (gt 5) draws 26 → wrong
    assert [i["gpt_cls_result"] for i in items] == [8, 7, 3, 24, 26]
    assert summary["correct_predictions"] == 3 and summary["invalid_responses"] == 2
    assert summary["invalid_correct_predictions"] == 1
    assert summary["accuracy"] == pytest.approx(100 * 3 / 5)
    assert summary["clean_accuracy"] == pytest.approx(100 * (3 - 1) / (5 - 2))


# ---------------------------------------------------------------------------------------------- endpoint, cost
def test_endpoint_precedence():
    env = {"ENEL_JUDGE_BASE_URL": "http://enel:1/v1", "OPENAI_BASE_URL": "http://openai:2/v1",
           "ENEL_JUDGE_MODEL": "env-model", "ENEL_JUDGE_API_KEY": "enel-key", "OPENAI_API_KEY": "openai-key"}
    ep = J.resolve_endpoint(env=env)
    assert (ep.base_url, ep.model, ep.api_key) == ("http://enel:1/v1", "env-model", "enel-key")
    ep = J.resolve_endpoint("http://arg:3", "arg-model", "arg-key", env=env)
    assert (ep.base_url, ep.model, ep.api_key) == ("http://arg:3/v1", "arg-model", "arg-key")
    ep = J.resolve_endpoint(model="m", env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://o:2/v1"})
    assert (ep.base_url, ep.api_key) == ("http://o:2/v1", "k")
    assert "k" not in repr(ep)
    with pytest.raises(ConfigError, match="no judge model"):
        J.resolve_endpoint(env={})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        J.resolve_endpoint(model="gpt-4o", env={})
    assert J.resolve_endpoint("http://localhost:11434/v1/chat/completions/", "llama3", env={}).api_key is None
    with pytest.raises(ConfigError, match="not an http"):
        J.normalize_base_url("localhost:8000")


def test_prices_and_cost():
    assert J.prices_for("gpt-4-0613") == (30.0, 60.0, "table")
    assert J.estimate_cost(1000, 500, 30.0, 60.0) == pytest.approx((1000 * 30 + 500 * 60) / 1e6)
    assert J.estimate_cost(10, 10, *J.prices_for("my-local-qwen")[:2]) == "unknown"
    assert J.prices_for("my-local-qwen", 0.0, 0.0) == (0.0, 0.0, "given")
    assert J.prices_for("gpt-4o", price_in=1.0)[:2] == (1.0, 10.0)


# ---------------------------------------------------------------------------------------------- end to end
def test_open_classification_valid_invalid_tokens_and_output_file(tmp_path):
    records = [make_record(f"o{i}", f"a chair number {i}", f"answer {i}") for i in range(6)]
    path = write(tmp_path, records)
    replies = {0: "T#same", 1: "F#different", 2: "T#same", 3: "Perhaps", 4: "T#ok", 5: "F#no"}

    def script(body, attempt, n):
        i = int(user_text(body).split("answer ")[1].split("\n")[0])
        return Action(content=replies[i], usage=(100 + i, 5))

    with FakeOpenAI(script) as srv:
        doc = judge(path, srv, api_key="sk-test", workers=3)
        assert len(srv.log) == 6 and all(e["auth"] == "Bearer sk-test" for e in srv.log)
        assert all(e["path"] == "/v1/chat/completions" for e in srv.log)
        body = srv.log[0]["body"]
        assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == ("fake-judge", 1, 1, 2048)
    out = tmp_path / "res_evaluated_fake-judge.json"
    assert json.loads(out.read_text()) == doc
    # 3 T, 2 F, 1 invalid: accuracy = 3 / (6 - 1)
    assert doc["accuracy"] == "60.00%" and doc["summary"]["accuracy"] == 60.0
    assert doc["invalid_responses"] == 1 and doc["correct_predictions"] == 3
    assert doc["prompt_tokens"] == sum(100 + i for i in range(6)) and doc["completion_tokens"] == 30
    assert doc["GPT_cost"] == "unknown" and doc["enel"]["judge"]["complete"]
    assert [r["object_id"] for r in doc["results"]] == [f"o{i}" for i in range(6)]  # file order, not finish order
    assert doc["results"][3]["gpt_cls_result"] == "INVALID"
    assert not (tmp_path / "res_evaluated_fake-judge_processed_temp.json").exists()


def test_slow_reply_times_out_and_is_retried(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "slow one"), make_record("b", "gt", "fast one")])

    def script(body, attempt, n):
        slow = "slow one" in user_text(body) and attempt == 0
        return Action(content="T#x", delay=1.0 if slow else 0.0)

    with FakeOpenAI(script) as srv:
        doc = judge(path, srv, timeout=0.3, workers=2)
        assert len(srv.log) == 3
    assert doc["usage"]["this_run"]["retries"] == 1 and doc["summary"]["accuracy"] == 100.0


def test_429_and_500_are_retried_with_retry_after(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    statuses = iter([429, 500, 503, 200])

    def script(body, attempt, n):
        status = next(statuses)
        wait = {"Retry-After": "0.01"} if status == 429 else {"retry-after-ms": "10"}
        return Action(status=status, content="T#x", headers=wait)

    with FakeOpenAI(script) as srv:
        start = time.monotonic()
        doc = judge(path, srv)
        assert time.monotonic() - start < 1.0  # the server's waits, not the 0.5 s, 1 s, 2 s back-off
        assert [e["status"] for e in srv.log] == [429, 500, 503, 200]
    assert doc["usage"]["this_run"]["requests"] == 4 and doc["usage"]["this_run"]["retries"] == 3


def test_gives_up_after_max_retries(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with FakeOpenAI(lambda b, a, n: Action(status=500, headers=SHORT_WAIT)) as srv:
        with pytest.raises(J.JudgeRequestError, match="gave up after 3 retries: HTTP 500"):
            judge(path, srv)
        assert len(srv.log) == 4


def test_auth_error_fails_fast(tmp_path):
    path = write(tmp_path, [make_record(i, "gt", f"out {i}") for i in range(3)])
    with FakeOpenAI(lambda b, a, n: Action(status=401, message="Incorrect API key")) as srv:
        with pytest.raises(J.JudgeAuthError, match="refused the API key .*Incorrect API key"):
            judge(path, srv, workers=1)
        assert len(srv.log) == 1


def test_not_found_names_base_url_and_model(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with FakeOpenAI(lambda b, a, n: Action(status=404, message="model 'x' not found")) as srv:
        with pytest.raises(J.JudgeRequestError, match="check --base-url"):
            judge(path, srv)


def test_no_key_sends_no_authorization_header(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with FakeOpenAI(lambda b, a, n: Action(content="T#x")) as srv:
        judge(path, srv)
        assert [e["auth"] for e in srv.log] == [None]


@pytest.mark.parametrize("raw", ["<html>Welcome to nginx</html>", '{"object": "list", "data": []}',
                                 '{"choices": []}'])
def test_malformed_reply_names_the_endpoint(tmp_path, raw):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with FakeOpenAI(lambda b, a, n: Action(raw=raw)) as srv:
        with pytest.raises(J.JudgeRequestError, match="not a chat completion .*OpenAI-compatible /v1") as info:
            judge(path, srv)
        assert len(srv.log) == 1  # a reply in another protocol is not retried
    assert "nothing was judged yet" in str(info.value)


def test_timeout_gives_up_with_the_fix(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with FakeOpenAI(lambda b, a, n: Action(content="T#x", delay=0.5)) as srv:
        with pytest.raises(J.JudgeRequestError, match="gave up after 1 retries: no reply within 0.2 s; raise "
                                                      "--timeout"):
            judge(path, srv, timeout=0.2, max_retries=1)
        assert len(srv.log) == 2


def test_unreachable_server(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(J.JudgeConnectionError, match="cannot reach the judge server") as info:
        J.run_judge(path, base_url=f"http://127.0.0.1:{port}", model="m", max_retries=1, cache_dir=None)
    assert isinstance(info.value, EnelError) and "nothing was judged yet" in str(info.value)


def test_permanent_failure_then_resume_sends_nothing_twice(tmp_path):
    n_items, k = 6, 3
    path = write(tmp_path, [make_record(i, f"gt {i}", f"out {i}") for i in range(n_items)])
    state = {"ok": 0, "broken": True}

    def script(body, attempt, n):
        if state["broken"] and state["ok"] >= k:
            return Action(status=500, headers=SHORT_WAIT)
        state["ok"] += 1
        return Action(content="T#x")

    with FakeOpenAI(script) as srv:
        with pytest.raises(J.JudgeRequestError, match=f"{k}/{n_items} judged items saved .*rerun"):
            judge(path, srv, workers=1)
        temp = tmp_path / "res_evaluated_fake-judge_processed_temp.json"
        partial = json.loads(temp.read_text())
        assert partial["enel"]["judge"]["complete"] is False and len(partial["results"]) == k
        sent_before = len(srv.log)

        state["broken"] = False
        doc = judge(path, srv, workers=3)
        assert len(srv.log) - sent_before == n_items - k
        assert doc["usage"]["this_run"]["items_resumed"] == k
    counts = successes_per_prompt(srv)
    assert len(counts) == n_items and set(counts.values()) == {1}
    assert doc["total_predictions"] == n_items and doc["summary"]["accuracy"] == 100.0
    assert not temp.exists()


def test_keyboard_interrupt_saves_and_resumes(tmp_path):
    n_items = 8
    path = write(tmp_path, [make_record(i, f"gt {i}", f"out {i}") for i in range(n_items)])

    def stop_after_two(item, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with FakeOpenAI(lambda b, a, n: Action(content="F#x")) as srv:
        with pytest.raises(KeyboardInterrupt):
            judge(path, srv, workers=2, on_item=stop_after_two)
        partial = json.loads((tmp_path / "res_evaluated_fake-judge_processed_temp.json").read_text())
        saved = len(partial["results"])
        assert 2 <= saved < n_items
        first = len(srv.log)
        assert first == saved  # every request that finished was kept
        doc = judge(path, srv, workers=2)
        assert len(srv.log) == n_items
    assert set(successes_per_prompt(srv).values()) == {1}
    assert doc["summary"]["accuracy"] == 0.0 and doc["total_predictions"] == n_items


def test_cache_makes_a_rerun_free(tmp_path):
    records = [make_record(i, f"gt {i}", f"out {i}") for i in range(4)]
    path = write(tmp_path, records)
    cache = tmp_path / "cache"
    with FakeOpenAI(lambda b, a, n: Action(content="T#x", usage=(50, 3))) as srv:
        first = judge(path, srv, cache_dir=cache)
        (tmp_path / "res_evaluated_fake-judge.json").unlink()  # no resume file: only the cache can help
        second = judge(path, srv, cache_dir=cache)
        assert len(srv.log) == 4
        assert second["usage"]["this_run"]["cache_hits"] == 4 and second["usage"]["this_run"]["requests"] == 0
        assert second["summary"] == first["summary"] and second["prompt_tokens"] == 200
        assert second["cost"]["usd_this_run"] == "unknown"
        judge(path, srv, cache_dir=cache, model="other-judge")  # another model is another key
        assert len(srv.log) == 8


def test_changed_output_is_judged_again(tmp_path):
    records = [make_record(i, "gt", f"out {i}") for i in range(3)]
    path = write(tmp_path, records)
    with FakeOpenAI(lambda b, a, n: Action(content="T#x")) as srv:
        judge(path, srv)
        records[1]["model_output"] = "a new answer"
        write(tmp_path, records)
        doc = judge(path, srv)
        assert len(srv.log) == 4 and "a new answer" in user_text(srv.log[-1]["body"])
    assert doc["usage"]["this_run"]["items_resumed"] == 2


def test_modelnet_end_to_end_is_reproducible(tmp_path):
    gts = [8, 7, 0, 24, 5]
    replies = {0: "8#chair#a", 1: "7#car#b", 2: "3#bench#c", 3: "I am not sure", 4: "-1#NA#Cannot infer"}
    records = [make_record(i, g, f"desc {i}", label_name=P.MODELNET40_CLASSES[g]) for i, g in enumerate(gts)]
    path = write(tmp_path, records)

    def script(body, attempt, n):
        return Action(content=replies[int(user_text(body).split("desc ")[1].split("\n")[0])])

    docs = []
    with FakeOpenAI(script) as srv:
        for workers in (1, 4):
            docs.append(judge(path, srv, workers=workers, out=tmp_path / f"mn_{workers}.json"))
    assert docs[0]["enel"]["judge"]["settings"]["eval_type"] == J.MODELNET_CLS  # inferred from label_name
    for doc in docs:
        assert doc["accuracy"] == "60.00%" and doc["clean_accuracy"] == "66.67%"
        assert doc["invalid_correct_predictions"] == 1 and doc["invalid_responses"] == 2
        assert [r["gpt_cls_result"] for r in doc["results"]] == [8, 7, 3, 24, 26]
        third = doc["results"][3]
        assert (third["gpt_cls_label"], third["ground_truth_label"]) == ("INVALID", "person")
        assert third["random_guess"] is True


def test_captioning_average_excludes_invalid(tmp_path):
    path = write(tmp_path, [make_record(i, "gt", f"cap {i}") for i in range(3)],
                 prompt="Caption this 3D model in detail.")
    replies = {0: "80#good", 1: "60#fair", 2: "150#broken"}
    with FakeOpenAI(lambda b, a, n: Action(content=replies[int(user_text(b).split("cap ")[1][0])])) as srv:
        doc = judge(path, srv, model="gpt-4-0613")
    assert doc["average_score"] == "70.00" and doc["invalid_responses"] == 1 and doc["total_score"] == "140.00"
    assert "gpt_prompt" in doc and doc["results"][2]["gpt_score"] == -1
    assert doc["GPT_cost"] == pytest.approx((3 * 10 * 30.0 + 3 * 2 * 60.0) / 1e6)


def test_qa_averages_k_scorings_and_reasks_invalid(tmp_path):
    records = [make_record("obj", "a mug", "a cup", question="What is it?", question_type="General Visual Recognition",
                           question_id="q1"),
               make_record("obj", "red", "blue", question="Color?", question_type="Knowledge", question_id="q2"),
               make_record("obj", "two", "2", question="How many?", question_type="Knowledge", question_id="q3")]
    path = write(tmp_path, records, prompt="")
    scripted = {"q1": ["80", "abc", "60", "70"], "q2": ["nope"] * 10, "q3": ["100", "90", "95"]}

    def script(body, attempt, n):
        text = user_text(body)
        qid = "q1" if "What is it?" in text else "q2" if "Color?" in text else "q3"
        return Action(content=scripted[qid][attempt])

    with FakeOpenAI(script) as srv:
        doc = judge(path, srv, J.QA, samples=3, workers=3)
        by_q = {}
        for body in srv.sent():
            by_q[user_text(body)] = by_q.get(user_text(body), 0) + 1
        assert sorted(by_q.values()) == [3, 4, 6]  # q3: 3 valid; q1: one re-ask; q2: gives up after 2k
        assert srv.log[0]["body"]["messages"][0]["role"] == "system"
    items = {r["question_id"]: r for r in doc["results"]}
    assert items["q1"]["scores"] == [80.0, 60.0, 70.0] and items["q1"]["score"] == 70.0
    assert items["q2"]["score"] is None and items["q3"]["score"] == 95.0
    s = doc["summary"]
    assert s["average_score"] == pytest.approx((70 + 95) / 2) and s["invalid_items"] == 1
    assert s["invalid_responses"] == 1 + 6 and s["per_type"] == {"General Visual Recognition": 70.0, "Knowledge": 95.0}
    with pytest.raises(ConfigError, match="other settings .*samples"):
        judge(path, srv, J.QA, samples=2)


def test_missing_usage_counts_zero_tokens(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    with FakeOpenAI(lambda b, a, n: Action(content="T#x", usage=None)) as srv:
        doc = judge(path, srv)
    assert doc["prompt_tokens"] == 0 and doc["usage"]["replies_without_usage"] == 1


def test_duplicate_ids_and_bad_type_are_rejected(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "x"), make_record("a", "gt", "y")])
    with pytest.raises(ConfigError, match="appears twice"):
        J.run_judge(path, base_url="http://127.0.0.1:9", model="m")
    path = write(tmp_path, [make_record("a", "gt", "x")], prompt="Describe it", name="odd.json")
    with pytest.raises(ConfigError, match="pass --type"):
        J.run_judge(path, base_url="http://127.0.0.1:9", model="m")


def test_cli_judge(tmp_path, capsys):
    from enel.cli import eval as commands

    path = write(tmp_path, [make_record(i, "gt", f"out {i}") for i in range(3)])
    parser = argparse.ArgumentParser(prog="enel")
    commands.register(parser.add_subparsers(dest="command"))
    with FakeOpenAI(lambda b, a, n: Action(content="T#x")) as srv:
        args = parser.parse_args(["eval", "judge", str(path), "--base-url", srv.base_url, "--model", "judge-x",
                                  "--cache-dir", str(tmp_path / "c"), "--price-in", "1", "--price-out", "2", "--json"])
        assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)[str(path)]
    assert report["summary"]["accuracy"] == 100.0 and report["summary"]["requests_this_run"] == 3
    assert report["summary"]["cost_usd"] == pytest.approx((3 * 10 * 1 + 3 * 2 * 2) / 1e6)
    assert report["out"] == str(tmp_path / "res_evaluated_judge-x.json")


def test_unwritable_cache_is_a_clear_error(tmp_path):
    path = write(tmp_path, [make_record("a", "gt", "out")])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with FakeOpenAI(lambda b, a, n: Action(content="T#x")) as srv:
        with pytest.raises(ConfigError, match="cannot write the judge cache .*--no-cache"):
            judge(path, srv, cache_dir=blocker)
