"""text-sentiment: synthetic template-generated reviews; seeded, disjoint splits, learnable but not trivial."""

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.data.text import KINDS, load_text_sentiment, sentiment_words


def test_default_sizes_balance_and_honest_source():
    tr, te = load_text_sentiment("train"), load_text_sentiment("test")
    assert len(tr) == 2000 and len(te) == 500 and len(load_text_sentiment("val")) == 500
    assert tr.modality == "text" and tr.class_names == ["negative", "positive"]
    assert 0.45 < float(tr.y.float().mean()) < 0.55
    assert "synthetic" in tr.source and "template" in tr.source
    assert set(tr.attrs["kind"]) == set(KINDS)
    assert len(set(tr.x)) == len(tr)


def test_splits_never_share_a_text_even_across_seeds():
    tr = set(load_text_sentiment("train", seed=0).x)
    assert not tr & set(load_text_sentiment("test", seed=0).x)
    assert not tr & set(load_text_sentiment("test", seed=7).x)
    assert not tr & set(load_text_sentiment("val", seed=0).x)


def test_seeded():
    a, b = load_text_sentiment("test", n=40, seed=1), load_text_sentiment("test", n=40, seed=1)
    assert a.x == b.x and torch.equal(a.y, b.y)
    assert a.x != load_text_sentiment("test", n=40, seed=2).x


def test_labels_follow_polarity_and_negation_flips_it():
    words = sentiment_words()
    pos, neg = set(words["positive"]), set(words["negative"])
    ds = load_text_sentiment("train", n=400)
    seen = set()
    for text, y, kind in zip(ds.x, ds.y.tolist(), ds.attrs["kind"]):
        main = next(s for s in text.split(". ") if any(w.strip(".,;").lower() in pos | neg for w in s.split()))
        tokens = {t.strip(".,;").lower() for t in main.split()}
        if kind == "plain":
            assert bool(tokens & pos) == (y == 1) and bool(tokens & neg) == (y == 0)
        elif kind == "negated":
            assert tokens & {"not", "never", "nothing", "hardly"}
            assert bool(tokens & pos) == (y == 0) and bool(tokens & neg) == (y == 1)
        else:
            assert tokens & pos and tokens & neg
        seen.add(kind)
    assert seen == set(KINDS)


def test_tfidf_logistic_regression_learns_it_but_not_trivially():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    tr, te = load_text_sentiment("train"), load_text_sentiment("test")
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000))
    model.fit(tr.x, tr.y.numpy())
    acc = float((torch.from_numpy(model.predict(te.x)) == te.y).float().mean())
    assert 0.88 <= acc <= 0.985


def test_errors():
    with pytest.raises(ConfigError, match="split"):
        load_text_sentiment("dev")
    with pytest.raises(ConfigError):
        load_text_sentiment("test", n=-1)
