"""Prompt-injection screening: sentences that address the AI rather than the support team are removed
before the model reads the ticket, and the ticket is flagged for a human.

Second line of defence, behind the fenced prompt (ticket text is data) and the defused control
tokens: a small model obeys "ignore all previous instructions…" far too readily for a fence alone.
Patterns cover the override phrasings we see in tickets in 14 languages; a paraphrase they miss
still meets the fence. Removing whole sentences keeps the customer's actual request intact.
"""

from __future__ import annotations

import re

# Each pattern is one way of telling an AI to drop its instructions, take a new persona or reveal
# its prompt. Matched case-insensitively anywhere in a sentence.
_PATTERNS = [
    # English
    r"\b(ignore|disregard|forget|override)\b.{0,30}\b(previous|prior|above|earlier|your|all|the)\b.{0,20}"
    r"\b(instructions?|rules|prompts?|guidelines)\b",
    r"\b(reveal|print|show|repeat|output|copy)\b.{0,25}\b(system prompt|your prompt|your instructions)\b",
    r"\byou are now\b|\bfrom now on,? (you|act)\b|\bpretend (to be|you are)\b",
    r"\b(note|message|instruction)s? (to|for) the (ai|bot|assistant|model|llm)\b",
    r"\b(ai|automated) (assistant|system)\s*:",
    # German
    r"\b(ignorier\w*|vergiss\w*|missachte\w*)\b.{0,30}\b(anweisungen|instruktionen|regeln|vorgaben)\b",
    r"\bhinweis an (das|die|den) (ki|ai|bot|system)",
    # Spanish / Portuguese / Italian
    r"\b(ignora\w*|olvida\w*|esquece\w*|ignore)\b.{0,30}\b(instrucciones|instruções|instrucoes|istruzioni)\b",
    r"\b(prompt de sistema|prompt do sistema|prompt di sistema)\b",
    r"\b(asistente|assistente) (automático|automatico|virtual)\s*:",
    # French
    r"\b(ignore[rz]?|oublie[rz]?)\b.{0,30}\b(instructions|consignes)\b",
    # Dutch / Swedish / Polish / Turkish / Russian
    r"\b(negeer|vergeet)\b.{0,30}\b(instructies|opdrachten)\b",
    r"\b(ignorera|glöm)\b.{0,30}\b(instruktioner)\b",
    r"\b(zignoruj|zapomnij)\b.{0,30}\b(instrukcj\w*|polece\w*)\b",
    r"\b(talimatları|talimatlari)\b.{0,30}\b(yok say|unut|görmezden gel)\w*",
    r"(игнорируй|забудь)\w*.{0,30}(инструкци|указани)\w*",
    # Japanese / Chinese / Korean / Arabic
    r"(以前|これまで|上記)の(指示|命令).{0,10}(無視|忘れ)",
    r"(忽略|无视|忘记).{0,10}(之前|以上|所有).{0,6}(指令|指示|说明)",
    r"(이전|모든).{0,6}(지시|명령).{0,6}(무시|잊)",
    r"(تجاهل|انس).{0,20}(التعليمات|الأوامر)",
]
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE | re.DOTALL)
# Sentence ends (Latin and CJK punctuation) and bracketed asides, so one injected note goes and the
# rest of the message stays.
_SEGMENTS = re.compile(r"\[[^\]]*\]|\([^)]*\)|[^.!?。！？\n\[\(]+(?:[.!?。！？]+|\n|$|(?=[\[\(]))")


def screen(text: str) -> tuple[str, bool]:
    """``(text without injected instructions, whether any were found)``."""
    if not _INJECTION.search(text):
        return text, False
    kept = [segment for segment in _SEGMENTS.findall(text) if not _INJECTION.search(segment)]
    cleaned = " ".join(s.strip() for s in kept if s.strip())
    return cleaned, True
