"""Stage-3 loss terms of trial runs, means per 200 steps, from their logs/metrics.csv.

    python experiments/loss_trajectory.py RUN [RUN ...]     (RUN: a directory name under runs/exp)
"""
import csv, collections, sys
for r in sys.argv[1:]:
    rows=list(csv.DictReader(open(f"runs/exp/{r}/logs/metrics.csv")))
    out=[]
    for key in ["train/loss_rec_step","train/loss_dis_step","train/dis_sample_weight","train/dis_ce_variant","train/dis_ce_invariant"]:
        acc=collections.defaultdict(list)
        for row in rows:
            if row.get(key): acc[int(row["step"])//200*200].append(float(row[key]))
        if acc: out.append(key.split("/")[1][:14]+" "+" ".join(f"{b}:{sum(v)/len(v):.4f}" for b,v in sorted(acc.items())))
    print(r); print("  "+"\n  ".join(out))
