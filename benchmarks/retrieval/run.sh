#!/bin/sh
# Contrastive runs on fashion_pairs (see make_pairs.py): each configuration trained on the
# seven seen classes, its retrieval on their test split, zero-shot classification of the
# three held-out classes' test pictures from prompts and from 5 prototypes each, against
# chance and a supervised LeNet trained on the held-out classes themselves.
#
#   sh benchmarks/retrieval/run.sh [PYTHON]      # PYTHON: a venv with numpy and pillow
set -e
PYTHON=${1:-python3}
FUSION=${FUSION:-target/release/fusion}
DATA=runs/retrieval/fashion_pairs
OUT=runs/retrieval
[ -f $DATA/pairs.jsonl ] || $PYTHON benchmarks/retrieval/make_pairs.py --out $DATA
UNSEEN="sandals,bag,ankle boots"
for config in scratch lit locked_text; do
  rm -rf $OUT/$config
  /usr/bin/time -f "$config: %e s wall, %M KB peak" $FUSION --quiet train --config benchmarks/retrieval/$config.json --run $OUT/$config --device cpu
  $FUSION --json eval --run $OUT/$config --split test > $OUT/$config-test.json
  $FUSION --json eval --run $OUT/$config --manifest $DATA/unseen.jsonl --split test --modality image \
    --classes "$UNSEEN" --template "{}" --template "a photo of {}" --template "{}, regular fit" > $OUT/$config-prompts.json
  $FUSION --json eval --run $OUT/$config --manifest $DATA/unseen.jsonl --split test --modality image --shots 5 > $OUT/$config-prototypes.json
  $PYTHON - $OUT/$config <<'PY'
import json, sys
run = sys.argv[1]
test = json.load(open(run + "-test.json"))
cells = []
for pair in test["task"]["pairs"]:
    recall = dict((k, r) for k, r in pair["metrics"]["recall_at"])
    cells.append(f"{pair['query']}→{pair['key']} R@1/5/10 {recall[1]:.3f} / {recall[5]:.3f} / {recall[10]:.3f}, median rank {pair['metrics']['median_rank']}")
zs = [json.load(open(run + f"-{m}.json"))["metrics"]["accuracy"] for m in ("prompts", "prototypes")]
print(f"{run}: " + "; ".join(cells) + f"; zero-shot on held-out classes: prompts {zs[0]:.3f}, 5 prototypes {zs[1]:.3f}")
PY
done
rm -rf $OUT/supervised_unseen
$FUSION --quiet train --config benchmarks/retrieval/supervised_unseen.json --run $OUT/supervised_unseen --device cpu
$FUSION --json eval --run $OUT/supervised_unseen --split test | $PYTHON -c "import json,sys; print('supervised LeNet on the held-out classes (100 train pictures each): test accuracy %.3f; chance 0.333' % json.load(sys.stdin)['metrics']['accuracy'])"
