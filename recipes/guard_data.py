"""The recipe's view of ../shared/data: training rows with stable keys, the validation split,
the source groups and the three benchmarks, read in their public formats.

One home for these facts, shared by recipes/teacher.py, recipes/mix.py and
bench/baseline_tfidf.py, so the split and the keys can never drift between them. The texts are
read from ../shared/data and never copied into the repository: committed outputs carry only
(file, line, key) references.
"""

import hashlib
import json
import pathlib

# The chat-guard files the first recipe used: user requests and prompt + response pairs.
CHAT_FILES = [
    "prompts_guardreasoner.jsonl",
    "prompts_toxicchat0124_train.jsonl",
    "prompts_harmful_seed.jsonl",
    "prompts_benign_alpaca.jsonl",
    "pairs_saferlhf.jsonl",
    "pairs_jailbreakbench_artifacts.jsonl",
    "pairs_alpacaeval_benign.jsonl",
]
# The toxicity / hate / harassment / sexism / self-harm sets added later (user-generated text).
TOXICITY_FILES = [
    "prompts_hatexplain_mbib.jsonl",
    "prompts_olid_offenseval2019.jsonl",
    "prompts_hateval2019_tweeteval.jsonl",
    "prompts_stormfront_hate_sentences.jsonl",
    "prompts_hatemoji.jsonl",
    "prompts_toxigen_seed_statements.jsonl",
    "prompts_edos_sexism.jsonl",
    "prompts_cmsb_call_me_sexist.jsonl",
    "prompts_workplace_sexism_mbib.jsonl",
    "prompts_convabuse_user_turns.jsonl",
    "prompts_twitter_suicidal_intention.jsonl",
    "prompts_sdcnl_suicide_vs_depression.jsonl",
]
BENCHMARKS = [
    "openai_moderation_1680.json",
    "toxicchat0124_test_5083.jsonl",
    "beavertails_test_3021.jsonl",
]


def default_data_dir():
    return pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def row_key(prompt, response):
    """A short, stable key of a row's text: committed labels name rows by (file, line, key),
    and the key catches a shared file that changed under them."""
    text = prompt + "\x00" + (response or "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_validation(prompt):
    """5% of every training file (by a hash of the prompt, so reruns split alike) is held out
    for choosing models; the rule is the first recipe's, so its split is unchanged."""
    return hashlib.sha256(prompt.encode()).digest()[0] < 13


class Row:
    __slots__ = ("file", "line", "prompt", "response", "label", "weak_negative", "key")

    def __init__(self, file, line, prompt, response, label, weak_negative):
        self.file, self.line = file, line
        self.prompt, self.response = prompt, response
        self.label, self.weak_negative = label, weak_negative
        self.key = row_key(prompt, response)

    @property
    def text(self):
        """One string for bag-of-words models: prompt, then response."""
        return pair_text(self.prompt, self.response)

    @property
    def group(self):
        return "chat" if self.file in CHAT_FILES else "toxicity"


def read_training_file(data_dir, name):
    """Rows of one training file; line numbers are 1-based like harmaug's errors."""
    rows = []
    with open(pathlib.Path(data_dir) / "train" / name, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            raw = json.loads(line)
            weak = raw.get("label_scope") == "category" and int(raw["label"]) == 0
            rows.append(
                Row(name, number, raw["prompt"], raw.get("response"), int(raw["label"]), weak)
            )
    return rows


def read_training(data_dir=None, files=None):
    data_dir = data_dir or default_data_dir()
    rows = []
    for name in files or CHAT_FILES + TOXICITY_FILES:
        rows.extend(read_training_file(data_dir, name))
    return rows


def read_benchmark(data_dir, name):
    """(texts as (prompt, response) pairs, labels 1 = unsafe) in each benchmark's own format."""
    path = pathlib.Path(data_dir) / "eval" / name
    if name.endswith(".json"):
        raw = json.load(open(path, encoding="utf-8"))
    else:
        raw = [json.loads(line) for line in open(path, encoding="utf-8")]
    pairs, labels = [], []
    for row in raw:
        if "is_safe" in row:
            pairs.append((row["prompt"], row["response"]))
            labels.append(0 if row["is_safe"] else 1)
        else:
            pairs.append((row.get("prompt", row.get("user_input")), None))
            labels.append(int(row["toxicity"]))
    return pairs, labels


def pair_text(prompt, response):
    return prompt if not response else prompt + "\n" + response
