"""Prompt templates of the agent's nodes, filled at call time.

Context first: analyze and answer open with the same system message, the numbered excerpts, so
their prompts share a byte-identical prefix that llama.cpp, vLLM and Ollama keep in their KV cache;
the answer then reads only its own instructions, not the code again. Each task (judge, answer)
comes after the excerpts, in the human turn.
"""

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

#: How the excerpts' system message begins.
ANSWER_MARKER = "You are Cairn"
#: How the answer task begins (a test model tells the answer prompt by it).
ANSWER_TASK = "Answer the question"

EXCERPTS_SYSTEM = (
    ANSWER_MARKER + ", an assistant that answers questions about one code repository using only numbered "
    "excerpts of its code. Each excerpt starts with its citation in square brackets, [path:start-end].\n\n"
    "Excerpts:\n{excerpts}"
)

PLAN = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You turn a developer's latest question about a code repository into a standalone question "
            "and one to three short search queries (identifiers, function or class names, key terms). "
            'Reply with JSON only, for example: {{"question": "How does X handle Y?", '
            '"queries": ["X handle Y", "handle_y"]}}',
        ),
        MessagesPlaceholder("history", optional=True),
        ("human", "Latest question: {question}"),
    ]
)

#: HyDE: a hypothetical snippet that would answer the question, searched for its likeness to real code.
HYDE = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Write a short Python code snippet (at most 12 lines) that could be the code this question about a "
            "repository is asking about. Reply with the code only.",
        ),
        ("human", "{question}"),
    ]
)

ANALYZE = ChatPromptTemplate.from_messages(
    [
        ("system", EXCERPTS_SYSTEM),
        (
            "human",
            "Question: {question}\n\nWhich excerpts help answer the question, and are they enough to answer it? "
            'Reply with JSON only: {{"relevant": [excerpt numbers], "sufficient": true or false, '
            '"missing": "what is still needed, if anything"}}',
        ),
    ]
)

ANALYZE_WITH_TOOLS = ChatPromptTemplate.from_messages(
    [
        ("system", EXCERPTS_SYSTEM),
        (
            "human",
            "Question: {question}\n\nYou are gathering code to answer the question. If something needed is "
            "missing from the excerpts, call the tools (search_code, read_file, grep, outline) to fetch it; "
            "otherwise reply 'enough'.",
        ),
    ]
)

REFINE = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Searches of a code repository did not find enough to answer a question. Write one to three "
            "new, different search queries (identifiers or key terms) for what is missing. "
            'Reply with JSON only: {{"queries": ["...", "..."]}}',
        ),
        ("human", "Question: {question}\nAlready searched: {searched}\nMissing: {missing}"),
    ]
)

ANSWER = ChatPromptTemplate.from_messages(
    [
        ("system", EXCERPTS_SYSTEM),
        MessagesPlaceholder("history", optional=True),
        (
            "human",
            ANSWER_TASK + " below from {use}. After each claim, cite the excerpt it comes from with its "
            "citation in square brackets exactly as written, e.g. {example}. Never cite anything else. If the "
            "excerpts do not answer the question, say so plainly.\n\nQuestion: {question}",
        ),
    ]
)

#: What the answer says when the model wrote no answer text (the Sources list follows it).
EMPTY_ANSWER = "The model gave no answer text for this question; the most relevant places in the code are listed below."

NOTHING_FOUND = (
    "I could not find code in the index that answers this question. Try naming a file, function or "
    "class, or check that the repository was ingested (cairn ingest PATH)."
)
