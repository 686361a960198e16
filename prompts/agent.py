"""Prompt templates of the agent's nodes, filled at call time."""

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

#: How the answer prompt's system message begins (a test model tells the answer prompt by it).
ANSWER_MARKER = "You are Cairn"

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

ANALYZE = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You judge which numbered code excerpts help answer a question about a repository, and whether "
            'together they suffice. Reply with JSON only: {{"relevant": [1, 3], "sufficient": true, '
            '"missing": "what is still needed, if anything"}}',
        ),
        ("human", "Question: {question}\n\nExcerpts:\n{excerpts}"),
    ]
)

ANALYZE_WITH_TOOLS = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are gathering code to answer a question about a repository. The excerpts found so far are "
            "below. If something needed is missing, call the tools (search_code, read_file, grep, outline) "
            "to fetch it; otherwise reply 'enough'.",
        ),
        ("human", "Question: {question}\n\nExcerpts:\n{excerpts}"),
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
        (
            "system",
            ANSWER_MARKER + ", an assistant that answers questions about one code repository using only the "
            "numbered excerpts given. After each claim, cite the excerpt it comes from with its citation in "
            "square brackets exactly as written, e.g. [src/app.py:10-24]. Never cite anything else. If the "
            "excerpts do not answer the question, say so plainly.",
        ),
        MessagesPlaceholder("history", optional=True),
        ("human", "Excerpts:\n{context}\n\nQuestion: {question}"),
    ]
)

NOTHING_FOUND = (
    "I could not find code in the index that answers this question. Try naming a file, function or "
    "class, or check that the repository was ingested (cairn ingest PATH)."
)
