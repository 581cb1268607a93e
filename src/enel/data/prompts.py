"""Every prompt of the evaluation protocol, in one place: the benchmark prompts and the judge prompts.

The benchmark prompts (:data:`PROMPT_LISTS`, by name :data:`PROMPTS`) are what the CLI, the evaluations, the
demo and the training previews ask a model; the procedural generator's instruction tables
(:mod:`enel.data.procedural.language`) take them from here, so the benchmark questions are in its distribution.

Provenance
----------
The three PointLLM judge prompts below are PointLLM's ``pointllm/eval/evaluator.py`` strings
(``gpt4_open_free_from_cls_prompt``, ``chatgpt_close_set_cls_prompt``, ``gpt4_object_captioning_prompt``),
copied character for character from a stored copy of the public InternRobotics/PointLLM repository
(commit 5950ed2) that the project's reference index holds; the project report
(``docs/pointllm-ecosystem.md`` §3.4) only paraphrases them. Nothing is fetched at run time.
The ModelNet40 names are PointLLM's ``modelnet40_shape_names_modified.txt`` (the standard ModelNet40
list, alphabetical, underscores replaced by spaces).

The 3D MM-Vet QA prompt is ShapeLLM's ``gpt_eval.py`` prompt as carried into ENEL's history
(``pointllm/eval/gpt_eval.py``, read from a stored public copy): a system message plus a user message
with four few-shot examples and a 0-100 "same thing" confidence score. Its odd indentation (16 spaces
per line inside a triple-quoted string) is reproduced on purpose, so that a judge sees the same bytes.

Judge prompts are templates for :meth:`str.format`; the values substituted into them (captions, model
outputs) are not re-parsed, so braces inside a model's answer are safe.
"""

from __future__ import annotations

from .labels import MODELNET40_CLASSES

# --------------------------------------------------------------------------------------------------------
# Benchmark prompts (PointLLM ``eval_objaverse.py`` / ``eval_modelnet_cls.py`` PROMPT_LISTS)
# --------------------------------------------------------------------------------------------------------
PROMPT_LISTS: tuple[str, ...] = (
    "What is this?",  # 0: instruction-type classification ("I")
    "This is an object of ",  # 1: completion-type classification ("C"); the trailing space is PointLLM's
    "Caption this 3D model in detail.",  # 2: captioning
)

PROMPTS: dict[str, str] = {"what": PROMPT_LISTS[0], "completion": PROMPT_LISTS[1], "caption": PROMPT_LISTS[2]}
"""The benchmark prompts by name (``enel classify --prompt what|completion``, the evaluations, the demo)."""

# --------------------------------------------------------------------------------------------------------
# PointLLM judge prompts
# --------------------------------------------------------------------------------------------------------
OPEN_FREE_FORM_CLS_PROMPT = (
    "Analyze two sentences and determine if they're referring to the same general object or concept, "
    "focusing on the type of object, not attributes such as color, size, or shape. Respond with 'T' if they "
    "refer to the same thing and 'F' if not. Also, provide a brief rationale (no more than 20 words) for your "
    "judgment.\n"
    "Example:\n"
    "Input: 1. Spiral staircase that goes from a ground floor. 2. This is a 3D model of wooden stairs in light "
    "brown\n"
    "Output: T#Both refer to a staircase.\n"
    "\n"
    "Now, analyze the following:\n"
    "Input: 1. {ground_truth} 2. {model_output}\n"
    "Output: "
)

# ``{candidate_lists}`` is filled with "0: airplane\n1: bathtub\n..." once; PointLLM then appends
# "{model_output}\nOutput: " (see :func:`close_set_cls_template`).
CLOSE_SET_CLS_PROMPT = (
    "Given the following free-form description of a 3D object, please determine the most probable class "
    "index from the following 40 available categories, even if the description doesn't clearly refer to any "
    "one of them. Make your best-educated guess based on the information provided. If the description already "
    "contains a valid index, then the index should be selected. If it contains more than one valid index, then "
    "randomly select one index (specify your reason). If there is no valid index and it cannot be inferred "
    "from the information, return '-1#NA#Cannot infer'.\n"
    "Categories:\n"
    "{candidate_lists}\n"
    "Reply with the format of 'index#class#short reason (no more than 10 words)'.\n"
    "\n"
    "Examples:\n"
    "Input: This is a 3D object model of a cartoon white truck.\n"
    "Output: 7#car#Closest match to 'car' in categories.\n"
    "\n"
    "Input: A green leaf in a flower pot.\n"
    "Output: 26#plant#The primary subject 'leaf' directly indicates a plant.\n"
    "\n"
    "Input: It's difficult to determine the exact type of this object due to insufficient details. But it "
    "seems to be like a piece of furniture.\n"
    "Output: 33#table#Randomly select one kind of furniture from the list.\n"
    "\n"
    "Input:  I cannot determine the specific type of the object without additional information or context.\n"
    "Output: -1#NA#Cannot infer.\n"
    "\n"
    "Now analyze the following:\n"
    "Input: "
)

OBJECT_CAPTIONING_PROMPT = (
    "Evaluate a model-generated caption against a human-generated caption (ground truth) for a 3D model. "
    "Identify the aspects mentioned in the human caption and calculate the percentage of these aspects "
    "correctly mentioned or partially matched in the model caption. Score from 0 to 100, where each aspect "
    "contributes equally to the score. Consider similar concepts for partial score.\n"
    "\n"
    "Provide your score (0-100) and a short justification (less than 15 words) in the format of "
    "'score#reason'\n"
    "\n"
    "Example:\n"
    "Human: A white brown skeleton\n"
    "Model: This is a 3D model of a small, cartoon-like robot. It has a spherical body and is covered in a "
    "layer of white dust.\n"
    "Output: 50#mention white; skeleton and robot have similar appearence.\n"
    "\n"
    "Now score the following:\n"
    "Human: {ground_truth}\n"
    "Model: {model_output}\n"
    "Output: "
)

# --------------------------------------------------------------------------------------------------------
# 3D MM-Vet QA judge (ShapeLLM / ENEL ``gpt_eval.py``): system + user message, score 0-100
# --------------------------------------------------------------------------------------------------------
QA_SYSTEM_PROMPT = "You are a helpful AI assistant."

_QA_LINES = (
    "Now I will give you a question, the type of the question, an answer from model, and an answer from "
    "label. ",
    "All you need to do is focus on these two answers and figure out whether they are saying the same thing "
    "about the specific type of question.",
    "Your response should only be a confidence score ranging from 0 to 100. ",
    "Remember the confidence score is to evaluate how much two answers are describing the same thing.",
    "Your response confidence score should follow the scoring standard of the prompt I gave.",
    "Firstly I will give you several question & answer pairs as long as their confidence score:",
    "",
    "question1: How many oranges will there be if 1/3 of them are removed?",
    "question type: Knowledge",
    "answer from model: There will be 6 left.",
    "answer from label: As there are 9 oranges in total, there will be 6 oranges left if 1/3 of them are "
    "removed.",
    "confidence score: 100",
    "",
    "question2: What is this object?",
    "question type: General Visual Recognition",
    "answer from model: This is a bathtub",
    "answer from label: This is a dirty bathtub.",
    "confidence score: 80",
    "",
    "question3: What is this object?",
    "question type: General Visual Recognition",
    "answer from model: This is a bottle of water",
    "answer from label: This is a bottle of oil",
    "confidence score: 50",
    "",
    "question4: What is holding in this boy's right hand?",
    "question type: Spatial Recognition",
    "answer from model: He is holding a white cup in his right hand.",
    "answer from label: He is holding a sword in his right hand.",
    "confidence score: 0",
    "",
    "Next, I will give you the elements:",
    "question: {question},",
    "question type: {question_type},",
    "answer from model: {model_output},",
    "answer from label: {ground_truth}.",
    "Please remember, while outputting the confidence score, do not include any words, just the number.",
)
# The original is a triple-quoted string: a leading newline, every line indented by 16 spaces (blank
# lines included), and a final newline followed by 8 spaces.
QA_USER_PROMPT = "\n" + "\n".join(" " * 16 + line for line in _QA_LINES) + "\n" + " " * 8

# 3D MM-Vet question categories (ShapeLLM / ENEL ``eval_3dmmvet.py``)
QA_QUESTION_TYPES: tuple[str, ...] = (
    "General Visual Recognition",
    "Knowledge",
    "Language Generation",
    "Spatial Recognition",
    "Embodied Interaction",
)


def candidate_list(class_names: tuple[str, ...] | list[str] = MODELNET40_CLASSES) -> str:
    """The ``"0: airplane\\n1: bathtub\\n..."`` block of the close-set prompt."""
    return "\n".join(f"{i}: {name}" for i, name in enumerate(class_names))


def close_set_cls_template(class_names: tuple[str, ...] | list[str] = MODELNET40_CLASSES) -> str:
    """The close-set prompt with the categories filled in and PointLLM's ``{model_output}`` tail appended."""
    head = CLOSE_SET_CLS_PROMPT.replace("{candidate_lists}", candidate_list(class_names))
    return head + "{model_output}\nOutput: "


def open_free_form_messages(ground_truth: str, model_output: str) -> list[dict]:
    """Chat messages for the Objaverse open-vocabulary T/F judgement (one user turn, as PointLLM)."""
    content = OPEN_FREE_FORM_CLS_PROMPT.format(ground_truth=ground_truth, model_output=model_output)
    return [{"role": "user", "content": content}]


def close_set_messages(model_output: str, class_names: tuple[str, ...] | list[str] = MODELNET40_CLASSES
                       ) -> list[dict]:
    """Chat messages for the ModelNet40 ``index#class#reason`` mapping (one user turn, as PointLLM)."""
    content = close_set_cls_template(class_names).replace("{model_output}", model_output)
    return [{"role": "user", "content": content}]


def captioning_messages(ground_truth: str, model_output: str) -> list[dict]:
    """Chat messages for the caption ``score#reason`` judgement (one user turn, as PointLLM)."""
    content = OBJECT_CAPTIONING_PROMPT.format(ground_truth=ground_truth, model_output=model_output)
    return [{"role": "user", "content": content}]


def qa_messages(question: str, question_type: str, model_output: str, ground_truth: str) -> list[dict]:
    """Chat messages for the 3D MM-Vet 0-100 "same thing" score (system + user, as ShapeLLM)."""
    content = QA_USER_PROMPT.format(question=question, question_type=question_type,
                                    model_output=model_output, ground_truth=ground_truth)
    return [{"role": "system", "content": QA_SYSTEM_PROMPT}, {"role": "user", "content": content}]
