"""Entry validation and dedup keys of the buffer service (no Ray, pure parsing)."""

import os

import pytest

from azr.cruxeval import load_cruxeval
from azr.tasks import IDENTITY_INDUCTION, InductionTask, TaskType, Triplet
from buffer_service.entries import EntryRejected, entry_key, normalise_input

D = TaskType.DEDUCTION
LIMIT = 100_000


def triplet(program: str = "def f(x):\n    return x + 1", inp: str = "1", out: str = "2", **kw):
    return Triplet(program=program, input=inp, output=out, **kw)


def key(entry, task=D, limit=LIMIT):
    return entry_key(task, entry, limit)


def reason(entry, task=D, limit=LIMIT) -> str:
    with pytest.raises(EntryRejected) as info:
        entry_key(task, entry, limit)
    return info.value.reason


def test_comments_blank_lines_and_spacing_do_not_make_a_new_key():
    plain = triplet("def f(x):\n    return x + 1")
    noisy = triplet("# header\n\ndef f( x ) :   # entry\n\n        return (x+1)  # add\n")
    assert key(plain) == key(noisy)
    assert key(triplet(inp="[1,2], 'a'")) == key(triplet(inp="[1, 2],  'a'  # c"))


def test_different_input_program_step_or_task_type():
    base = triplet()
    assert key(base) != key(triplet(inp="2"))
    assert key(base) != key(triplet(program="def f(x):\n    return x + 2"))
    # Producing step and policy version are provenance, not identity.
    assert key(base) == key(triplet(step=5, policy_version=3))
    assert key(base, TaskType.DEDUCTION) != key(base, TaskType.ABDUCTION)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (triplet(program="def f(x):\n  return x +"), "program_syntax"),
        (triplet(program="def g(x):\n    return x"), "program_without_f"),
        (triplet(program="def f(x):\n    return 1\x00"), "program_syntax"),
        (triplet(inp="__import__('os').system('id')"), "input_not_literal"),
        (triplet(inp="1), print(2"), "input_syntax"),
        (triplet(inp="x=1"), "input_syntax"),
        (triplet(inp="*[1, 2]"), "input_not_literal"),
        (triplet(inp="[" * 5000 + "]" * 5000), "input_syntax"),
        (triplet(out="f(1)"), "output_not_literal"),
        (triplet(out="1 +"), "output_syntax"),
        (triplet(step=-1), "negative_step_or_version"),
        (triplet(program="def f(x):\n    return x\n" + "#" * LIMIT), "entry_too_large"),
    ],
)
def test_malformed_triplets_are_rejected_with_a_reason(entry, expected):
    assert reason(entry) == expected


def test_literal_forms_that_repr_produces_are_accepted():
    for text in ["-1.5", "1+2j", "set()", "frozenset({1, 2})", "{'a': (1, None)}", "b'x'", ""]:
        key(triplet(inp=text, out=text or "None"))


def test_wrong_entry_type_for_the_buffer():
    assert reason(IDENTITY_INDUCTION, TaskType.DEDUCTION) == "wrong_entry_type"
    assert reason(triplet(), TaskType.INDUCTION) == "wrong_entry_type"
    assert reason({"program": "def f(x): return x"}) == "wrong_entry_type"
    # model_construct skips pydantic validation: the buffer still checks field types.
    assert (
        reason(Triplet.model_construct(program=1, input="1", output="1", step=0, policy_version=0))
        == "wrong_field_type"
    )


def induction(visible, hidden, program="def f(x):\n    return x"):
    return InductionTask(program=program, message="m", visible=visible, hidden=hidden)


def test_induction_key_uses_program_and_all_inputs():
    a = induction((("1", "1"),), (("2", "2"),))
    spaced = induction((("1", "1"),), (("2", "2"),), program="def f(x) :\n  # id\n  return x")
    other_inputs = induction((("1", "1"),), (("3", "3"),))
    assert key(a, TaskType.INDUCTION) == key(spaced, TaskType.INDUCTION)
    assert key(a, TaskType.INDUCTION) != key(other_inputs, TaskType.INDUCTION)


def test_malformed_induction_tasks_are_rejected():
    assert reason(induction((("1", "1"),), ()), TaskType.INDUCTION) == (
        "induction_needs_visible_and_hidden"
    )
    assert reason(induction((("1", "1"),), (("(1)", "1"),)), TaskType.INDUCTION) == (
        "induction_inputs_not_distinct"
    )
    assert reason(induction((("1", "1"),), (("os", "1"),)), TaskType.INDUCTION) == (
        "input_not_literal"
    )


def test_normalise_input_is_stable():
    assert normalise_input("[1,2],{'a':1}") == "[1, 2], {'a': 1}"
    assert normalise_input(normalise_input("(1,) , 'x'")) == normalise_input("(1,) , 'x'")


def test_keys_do_not_depend_on_the_hash_seed():
    # Keys are stored on disk and compared after restarts: they must not follow
    # PYTHONHASHSEED (set constants compile to frozensets, iterated in hash order).
    import subprocess
    import sys

    script = (
        "from azr.tasks import Triplet, TaskType\n"
        "from buffer_service.entries import entry_key\n"
        "p = \"def f(x):\\n    return x in {'alpha', 'beta', 'gamma', 'delta', ('t', 1)}\"\n"
        "print(entry_key(TaskType.DEDUCTION, Triplet(program=p, input=\"'a'\", output='False'),"
        " 10**5))\n"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(keys) == 1


def test_compiler_folding_counts_as_the_same_program_but_names_do_not():
    assert key(triplet("def f(x):\n    return x * (1 + 1)")) == key(
        triplet("def f(x):\n    return x * 2")
    )
    assert key(triplet("def f(x):\n    return x + 1")) != key(
        triplet("def f(y):\n    return y + 1")
    )
    assert key(triplet("def f(x):\n    return 'a'")) != key(triplet("def f(x):\n    return b'a'"))
    assert key(triplet("def f(x):\n    return 1")) != key(triplet("def f(x):\n    return True"))


def test_programs_equal_after_an_ast_round_trip_are_always_duplicates():
    # The fingerprint is at least as coarse as ast.unparse(ast.parse(p)), on real programs.
    import ast

    from buffer_service.entries import program_fingerprint

    programs = [row.code for row in load_cruxeval()]
    assert len(programs) == 800
    for program in programs:
        round_tripped = ast.unparse(ast.parse(program))
        assert program_fingerprint(program) == program_fingerprint(round_tripped), program
    assert len({program_fingerprint(p) for p in programs}) == len(set(programs))


def test_input_form_equal_exactly_when_the_ast_round_trip_is_equal():
    # The dedup key's input form walks the AST instead of printing it: same partition.

    from buffer_service.entries import input_form

    texts = [row.input for row in load_cruxeval()]
    texts += ["1", "1.0", "True", "'1'", "b'1'", "(1)", "(1,)", "[1]", "{1}", "{1: 2}", "{}"]
    texts += ["set()", "frozenset()", "frozenset({1})", "-1", "- 1", "+1", "--1", "1+2j", "1-2j"]
    texts += ["'a' 'b'", "'ab'", '"ab"', "[1, [2, (3,)]]", "[1, [2, 3]]", "(), []", "((), [])"]
    texts += ["1e999", "0x10", "16", "None", "...", "[-1]", "[-(1)]", "{'a': [1]}", "{'a': (1,)}"]
    texts += [f" {t}  # comment" for t in texts]
    by_unparse: dict[str, str] = {}
    by_form: dict[str, str] = {}
    for text in texts:
        try:
            normal = normalise_input(text)
        except EntryRejected:
            continue
        form = input_form(text)
        assert by_unparse.setdefault(normal, form) == form, text
        assert by_form.setdefault(form, normal) == normal, text
    assert len(by_form) > 700


def test_docstrings_are_part_of_the_program_and_comments_are_not():
    base = triplet('def f(x):\n    """Add one."""\n    return x + 1')
    assert key(base) == key(triplet('def f(x):  # c\n    """Add one."""\n\n    return x+1  # c'))
    assert key(base) != key(triplet('def f(x):\n    """Add two."""\n    return x + 1'))
    assert key(base) != key(triplet("def f(x):\n    return x + 1"))


def test_batch_keys_gives_the_entry_key_or_the_first_reason_of_each_entry():
    from buffer_service.entries import batch_keys

    batch = [
        triplet(),
        triplet(program="def f(x):\n  return x +", inp="x", out="f(1)"),  # program first
        triplet(inp="os", out="f(1)"),  # then the input
        triplet(out="f(1)"),  # then the output
        triplet(step=-1, program="nonsense"),  # provenance before any parsing
        triplet(program="def f(x):\n    return x\n" + "#" * LIMIT),
        {"program": "def f(x): return x"},
        Triplet.model_construct(program=1, input="1", output="1", step=0, policy_version=0),
        triplet(program="# other\ndef f(x):\n    return x + 1", inp="2"),
    ]
    expected = []
    for entry in batch:
        try:
            expected.append((key(entry), None))
        except EntryRejected as exc:
            expected.append((None, exc.reason))
    assert batch_keys(D, batch, LIMIT) == expected
    assert [r for _, r in expected] == [
        None,
        "program_syntax",
        "input_not_literal",
        "output_not_literal",
        "negative_step_or_version",
        "entry_too_large",
        "wrong_entry_type",
        "wrong_field_type",
        None,
    ]
    ind = [IDENTITY_INDUCTION, induction((("1", "1"),), ())]
    assert batch_keys(TaskType.INDUCTION, ind, LIMIT) == [
        (key(IDENTITY_INDUCTION, TaskType.INDUCTION), None),
        (None, "induction_needs_visible_and_hidden"),
    ]


@pytest.mark.parametrize("dumps", ["pickle", "cloudpickle"])
def test_entry_batch_travels_compactly_and_arrives_unchanged(dumps):
    import pickle

    import ray.cloudpickle

    from buffer_service import EntryBatch
    from buffer_service.entries import batch_keys

    module = pickle if dumps == "pickle" else ray.cloudpickle
    wrong_types = Triplet.model_construct(
        program="def f(x):\n    return x", input="1", output="1", step="3", policy_version=0
    )
    bool_step = Triplet.model_construct(
        program="def f(x):\n    return x", input="1", output="1", step=True, policy_version=0
    )
    entries = [
        triplet(step=4, policy_version=2),
        IDENTITY_INDUCTION,
        induction((("1", "1"),), (("2", "2"),)),
        wrong_types,
        bool_step,
        {"program": "def f(x): return x"},
        ("def f(x):\n    return x", "1", "1", 0, 0),  # looks like a packed row: still no entry
        None,
    ]
    batch = EntryBatch(entries)
    assert batch == entries and isinstance(batch, list)
    arrived = module.loads(module.dumps(batch))
    assert type(arrived) is EntryBatch and arrived == entries
    assert [type(e) for e in arrived] == [type(e) for e in entries]
    assert arrived[3].step == "3" and arrived[4].step is True  # not coerced by validation
    # A plain list pickles each model's pydantic state (field set included): 3x the bytes.
    many = [triplet(inp=str(i)) for i in range(100)]
    assert 2 * len(pickle.dumps(EntryBatch(many))) < len(pickle.dumps(many))
    for task in (D, TaskType.INDUCTION):
        assert batch_keys(task, arrived, LIMIT) == batch_keys(task, entries, LIMIT)


def test_the_same_string_value_is_the_same_input_whatever_its_quotes():
    # ast.unparse keeps a u prefix ("u'a'"), the key's form does not: equal values, equal keys.
    assert key(triplet(inp="u'a'", out="'a'")) == key(triplet(inp="'a'", out="'a'"))
    assert key(triplet(inp='"a"', out="'a'")) == key(triplet(inp="'a'", out="'a'"))
    assert key(triplet(inp="b'a'", out="'a'")) != key(triplet(inp="'a'", out="'a'"))
