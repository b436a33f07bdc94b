"""`recsys demo`'s scoring stage against a real (tiny) exported buy model."""

import shutil

from recsys import demo


def test_show_scores_prints_titles_and_probabilities(tmp_path, tiny_store, capsys):
    from recsys.backbones import tiny_bert
    from recsys.data.buy_pairs import product_counts
    from recsys.tasks import buy_probability as bp
    from recsys.tasks import buy_probability_export

    backbone, text_pre = tiny_bert(sequence_length=32, hidden_dim=8)
    stats = bp.ProductStats(*product_counts(tiny_store.events, tiny_store.catalog))
    pre = bp.BuyProbabilityPreprocessor(text_pre.tokenizer, 32, 16, product_stats=stats)
    model = bp.build_model(backbone, hidden_dim=8)
    tmp = tmp_path / "saved_models" / "buy" / ".tmp"
    buy_probability_export.export(model, pre, tiny_store.catalog, tmp, history_length=4)
    shutil.move(tmp, tmp_path / "saved_models" / "buy" / "1")
    (tmp_path / "saved_models" / "buy" / "1" / "model_card.json").write_text("{}")
    demo._show_scores(tmp_path, tiny_store)
    out = capsys.readouterr().out
    assert "recently looked at" in out and "Buy probabilities for 8 products" in out
    titles = set(tiny_store.catalog["title"])
    assert sum(line.strip().split("%  ", 1)[-1] in titles for line in out.splitlines()) >= 8
