"""``lingxi import rasa``: a real Rasa 2.x/3.x project (rasa-demo, from the shared datasets) and a Rasa 1.x
project written here become Lingxi domains that validate, train and parse; what cannot be mapped is
listed in the import report with file:line."""

import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from litestar.testing import TestClient

from lingxi.datasets.domain import load_domain, load_eval_set
from lingxi.datasets.importers import ImportError_
from lingxi.datasets.importers.rasa import import_rasa, parse_annotated
from lingxi.datasets.public import datasets_root
from lingxi.datasets.validate import validate_domain
from lingxi.nlu.parse import ParseContext
from lingxi.serving.loading import pipeline_from_bundle
from lingxi.training.train import train_domain

RASA_DEMO = datasets_root() / "rasa-demo"
needs_rasa_demo = pytest.mark.skipif(not (RASA_DEMO / "domain.yml").is_file(),
                                     reason=f"shared dataset rasa-demo not found at {RASA_DEMO} "
                                            "(set LINGXI_DATASETS_DIR)")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lingxi.serving.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_annotations_become_plain_text_and_entity_values():
    plain, anns, problems = parse_annotated(
        'fly from [Berlin](city) to [the big apple]{"entity": "city", "value": "New York", "role": "to"} '
        'on [monday](day:Monday)')
    assert plain == "fly from Berlin to the big apple on monday"
    assert [(a.text, a.entity, a.value, a.role) for a in anns] == [
        ("Berlin", "city", None, None), ("the big apple", "city", "New York", "to"), ("monday", "day", "Monday", None)]
    assert problems == []
    plain, anns, problems = parse_annotated('see [x]{"entity": oops}')
    assert plain == "see x" and not anns and "unreadable entity annotation" in problems[0]


@needs_rasa_demo
def test_rasa_demo_imports_validates_trains_and_answers_in_rasa_shape(tmp_path, demo_encoder, lingxi_home):
    out = tmp_path / "sara"
    proc = _cli("import", "rasa", str(RASA_DEMO), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "import-report.md" in proc.stdout

    domain = load_domain(out)
    names = set(domain.intent_names)
    assert len(names) >= 60
    assert {"greet", "faq.rasa_components", "chitchat.ask_weather", "out_of_scope.other"} <= names
    faq = domain.intent("faq.rasa_components")
    assert faq.category == "faq" and faq.response and "Rasa Open Source" in faq.response
    assert not any("[" in ex and "](" in ex for i in domain.intents for ex in i.examples)  # annotations stripped
    products = next(e for e in domain.entities if e.name == "product")
    assert re.search(products.pattern, "is rasa x free?") and re.search(products.pattern, "Rasa Open Source")
    heldout, _ = load_eval_set(out)
    assert len(heldout) >= 400 and all(e.intent in names for e in heldout)

    report = (out / "import-report.md").read_text("utf-8")
    for dropped in (r"`domain.yml:\d+` form 'sales_form'", r"`domain.yml:\d+` custom action 'action_greet_user'",
                    r"`domain.yml:\d+` slot 'budget'", r"`data/nlu/nlu.yml:\d+` regex 'zipcode'",
                    r"`data/rules/rules.yml:\d+` rule 'why rasa 1' has a condition",
                    r"`config.yml:\d+` `pipeline`", r"`tests/test_conversations.yml:\d+` test stories",
                    r"`tests/test_nlu.yml:\d+` held-out example .* 'chitchat/ask_builder' is not in the imported"):
        assert re.search(dropped, report), dropped
    assert re.search(r"`data/rules/rules.yml:\d+` rule 'ask for more details' → response of 'need_help_broad'",
                     report)
    # every dropped line names a real line of a real file
    for file, line in re.findall(r"^- `([^`:]+):(\d+)`", report, re.M):
        assert (RASA_DEMO / file).is_file(), file
        assert 1 <= int(line) <= len((RASA_DEMO / file).read_text("utf-8").splitlines()), (file, line)

    findings = validate_domain(out, similarity_check=False)
    assert not findings.has_errors, [str(f) for f in findings.findings if f.severity == "ERROR"]

    # a quick training run (15% of each intent's examples); the full figures are in evals/rasa_import.py
    result = train_domain(out, tmp_path / "models", encoder=demo_encoder, log_to_mlflow=False, sample_fraction=0.15)
    assert len(result.bundle.intents) == len(names)
    assert result.metrics["in_scope_top1_accuracy"] > 0.6

    from lingxi.serving.app import create_app
    from lingxi.serving.loading import ModelHolder
    from lingxi.serving.settings import Settings

    holder = ModelHolder(tmp_path / "models", result.bundle.bot)
    holder._encoders[repr(result.bundle.encoders)] = demo_encoder
    assert holder.load_latest() is not None
    settings = Settings(home=str(lingxi_home), bot=result.bundle.bot)
    with TestClient(create_app(settings, holder)) as client:
        text = "what are the components of rasa?"
        lingxi = client.post("/v1/parse", json={"text": text}).json()
        rasa = client.post("/model/parse", json={"text": text}).json()
    assert lingxi["intent"]["name"] == "faq.rasa_components", lingxi["intent_ranking"]
    assert rasa["intent"]["name"] == "faq"
    selected = rasa["response_selector"]["faq"]["response"]
    assert selected["intent_response_key"] == "faq/rasa_components"
    assert selected["utter_action"] == "utter_faq/rasa_components"
    assert "Rasa Open Source" in selected["responses"][0]["text"]
    assert "faq" in rasa["response_selector"]["all_retrieval_intents"]


RASA1_NLU = """\
## intent:greet
- hey
- hello there
- good morning
- hi
- hello

## intent:book_flight
- I want to fly to [Berlin](city)
- book a flight to [NYC](city:New York)
- get me a ticket to [Paris](city) please
- I need a flight to [the big apple](city:New York)
- find flights to [Tokyo](city)
- fly me to [Rome](city)

## intent:bye
- bye
- goodbye
- see you later
- talk to you soon
- bye bye

## synonym:New York
- new york city
- manhattan

## regex:zipcode
- [0-9]{5}

## lookup:city
- Madrid
- Lisbon
"""

RASA1_STORIES = """\
## greet
* greet
  - utter_greet

## book
* book_flight{"city": "Berlin"}
  - slot{"city": "Berlin"}
  - action_search_flights
* bye
  - utter_bye
"""

RASA1_DOMAIN = """\
intents:
  - greet
  - book_flight
  - bye
entities:
  - city
slots:
  city:
    type: text
templates:
  utter_greet:
    - text: "Hello! How can I help?"
    - text: "Hi there!"
  utter_bye:
    - text: "Goodbye!"
      buttons:
        - title: "restart"
          payload: "/greet"
actions:
  - utter_greet
  - utter_bye
  - action_search_flights
"""

RASA1_TEST = """\
## intent:greet
- hey there
## intent:book_flight
- a flight to [Oslo](city) please
## intent:weather
- will it rain
"""


def _rasa1_project(root):
    (root / "data").mkdir(parents=True)
    (root / "data" / "nlu.md").write_text(RASA1_NLU, "utf-8")
    (root / "data" / "stories.md").write_text(RASA1_STORIES, "utf-8")
    (root / "domain.yml").write_text(RASA1_DOMAIN, "utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "test_nlu.md").write_text(RASA1_TEST, "utf-8")
    (root / "config.yml").write_text("language: en\npipeline: supervised_embeddings\n", "utf-8")
    return root


def test_rasa1_markdown_project_round_trips(tmp_path, demo_encoder):
    src = _rasa1_project(tmp_path / "rasa1")
    out = tmp_path / "domain"
    result = import_rasa(src, out, name="flights")
    assert result.intents == 3 and result.heldout == 2

    intents = {i["name"]: i for i in yaml.safe_load((out / "intents.yml").read_text("utf-8"))["intents"]}
    assert "book a flight to NYC" in intents["book_flight"]["examples"]
    assert intents["greet"]["response"] == "Hello! How can I help?"  # from the story `greet`
    assert intents["bye"]["response"] == "Goodbye!"  # by the utter_<intent> name only
    domain = load_domain(out)
    assert domain.name == "flights" and domain.language == "en"
    city = re.compile(next(e.pattern for e in domain.entities if e.name == "city"))
    for surface in ("Berlin", "NYC", "the big apple", "manhattan", "new york city", "Madrid", "Lisbon"):
        assert city.search(f"a flight to {surface} today"), surface
    assert not city.search("a flight to Berlinale")  # whole words only
    report = (out / "import-report.md").read_text("utf-8")
    values = next(e.values for e in domain.entities if e.name == "city")
    assert values == {"manhattan": "New York", "new york city": "New York", "nyc": "New York",
                      "the big apple": "New York"}
    assert re.search(r"`data/nlu.md:\d+` synonym 'New York' \(2 forms\) → value of entity city", report)

    report = (out / "import-report.md").read_text("utf-8")
    lines = RASA1_NLU.splitlines()
    zipcode_line = lines.index("- [0-9]{5}") + 1
    assert f"`data/nlu.md:{zipcode_line}` regex 'zipcode'" in report
    book_line = RASA1_STORIES.splitlines().index("## book") + 1
    assert re.search(rf"`data/stories.md:{book_line}` story 'book' .*needs dialogue state", report)
    assert "`data/stories.md:1` story 'greet' → response of 'greet'" in report
    assert re.search(r"`domain.yml:\d+` response 'utter_greet': 2 variants, one is kept", report)
    assert re.search(r"`domain.yml:\d+` response 'utter_bye': buttons not imported", report)
    assert re.search(r"`domain.yml:\d+` custom action 'action_search_flights'", report)
    assert re.search(r"`tests/test_nlu.md:\d+` held-out example 'will it rain': intent 'weather'", report)
    assert not validate_domain(out, similarity_check=False).has_errors

    trained = train_domain(out, tmp_path / "models", encoder=demo_encoder, log_to_mlflow=False)
    pipeline = pipeline_from_bundle(trained.bundle, demo_encoder)
    parsed = pipeline.parse("I want to fly to manhattan", ParseContext())
    assert parsed.intent.name == "book_flight"
    # the synonym's canonical value, as Rasa's EntitySynonymMapper reports it
    assert [(e.entity, e.text, e.value) for e in parsed.entities if e.entity == "city"] == \
        [("city", "manhattan", "New York")]
    assert [e.value for e in pipeline.parse("get me to Paris", ParseContext()).entities] == ["Paris"]


def test_rasa1_json_nlu_is_read(tmp_path):
    src = tmp_path / "rasa1json"
    (src / "data").mkdir(parents=True)
    (src / "data" / "nlu.json").write_text(textwrap.dedent("""\
        {"rasa_nlu_data": {
          "common_examples": [
            {"text": "hi", "intent": "greet", "entities": []},
            {"text": "hello", "intent": "greet", "entities": []},
            {"text": "show me chinese food", "intent": "restaurant_search",
             "entities": [{"start": 8, "end": 15, "value": "chinese", "entity": "cuisine"}]},
            {"text": "any mexican places", "intent": "restaurant_search",
             "entities": [{"start": 4, "end": 11, "value": "mexican", "entity": "cuisine"}]}
          ],
          "entity_synonyms": [{"value": "chinese", "synonyms": ["chines", "chinese food"]}],
          "regex_features": [{"name": "zipcode", "pattern": "[0-9]{5}"}]
        }}
        """), "utf-8")
    import_rasa(src, tmp_path / "out")
    domain = load_domain(tmp_path / "out")
    assert sorted(domain.intent_names) == ["greet", "restaurant_search"]
    cuisine = re.compile(next(e.pattern for e in domain.entities if e.name == "cuisine"))
    assert cuisine.search("i like chines") and cuisine.search("Mexican please")
    assert re.search(r"`data/nlu.json:\d+` regex 'zipcode'", (tmp_path / "out" / "import-report.md").read_text())


def test_broken_source_names_file_and_line_and_writes_nothing(tmp_path):
    src = tmp_path / "broken"
    (src / "data").mkdir(parents=True)
    (src / "data" / "nlu.yml").write_text('version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'
                                          '- intent: bye\n  examples: [unclosed\n', "utf-8")
    with pytest.raises(ImportError_) as exc:
        import_rasa(src, tmp_path / "out")
    assert re.match(r"data/nlu.yml:\d+: invalid YAML", exc.value.problems[0])
    assert not (tmp_path / "out").exists()
    proc = _cli("import", "rasa", str(src), "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "data/nlu.yml:" in proc.stderr
    assert not (tmp_path / "out2").exists()

    (src / "data" / "nlu.yml").write_text('nlu:\n- intent: greet\n', "utf-8")
    with pytest.raises(ImportError_) as exc:
        import_rasa(src, tmp_path / "out")
    assert exc.value.problems == ["data/nlu.yml:2: nlu item without `examples`"]


def test_rasa3_details_conditional_responses_metadata_and_action_options(tmp_path):
    src = tmp_path / "rasa3"
    (src / "data").mkdir(parents=True)
    (src / "data" / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n'
        '- intent: bye\n  examples:\n  - text: bye\n  - text: ciao\n    metadata: {sentiment: neutral}\n', "utf-8")
    (src / "domain.yml").write_text(
        'version: "3.1"\nactions:\n- action_lookup:\n    send_domain: true\n- utter_greet\nresponses:\n'
        '  utter_greet:\n  - text: "hey {name}"\n    condition:\n    - type: slot\n      name: vip\n      value: true\n'
        '  - text: "hello!"\n', "utf-8")
    import_rasa(src, tmp_path / "out")
    domain = load_domain(tmp_path / "out")
    assert domain.intent("greet").response == "hello!"  # the unconditional variant
    assert domain.intent("bye").examples == ["bye", "ciao"]
    report = (tmp_path / "out" / "import-report.md").read_text("utf-8")
    assert "`data/nlu.yml:10` example metadata is not imported" in report
    assert "`domain.yml:3` custom action 'action_lookup'" in report
    assert "`domain.yml:8` response 'utter_greet': condition not imported" in report


def test_validate_on_a_rasa_project_points_to_the_importer(tmp_path):
    src = _rasa1_project(tmp_path / "rasa1")
    proc = _cli("validate", str(src), "--no-similarity")
    assert proc.returncode == 1
    assert f"lingxi import rasa {src} --out" in proc.stderr and "Traceback" not in proc.stderr
