"""Text similarity of generated answers to the references, as LLaMA-Factory reports it for do_predict:
BLEU-4 (nltk, characters, smoothing method 3) and ROUGE-1/2/L F-scores (rouge-chinese on jieba words), × 100."""

from __future__ import annotations

from tunery.errors import TuneryError

METRIC_KEYS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def require_metrics():
    """The metric functions; a one-line error naming the extra when a package is missing."""
    try:
        import jieba
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge
    except ImportError as err:
        raise TuneryError(f"BLEU/ROUGE scores need the metrics extra ({err.name} is missing) — pip install "
                          "'tunery[metrics]' (jieba, nltk, rouge-chinese)") from None
    jieba.setLogLevel(60)  # no "Building prefix dict" chatter
    return jieba, sentence_bleu, SmoothingFunction().method3, Rouge()


def similarity(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean BLEU-4 and ROUGE-1/2/L over the pairs, rounded to 4 decimals (0 for an empty text)."""
    jieba, sentence_bleu, smoothing, rouge = require_metrics()
    totals = dict.fromkeys(METRIC_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        hyp_words, ref_words = list(jieba.cut(pred)), list(jieba.cut(ref))
        if " ".join(hyp_words).split() and " ".join(ref_words).split():
            scores = rouge.get_scores(" ".join(hyp_words), " ".join(ref_words))[0]
            for key in ("rouge-1", "rouge-2", "rouge-l"):
                totals[key] += round(scores[key]["f"] * 100, 4)
        totals["bleu-4"] += round(sentence_bleu([list(ref)], list(pred), smoothing_function=smoothing) * 100, 4)
    n = max(len(predictions), 1)
    return {key: round(value / n, 4) for key, value in totals.items()}
