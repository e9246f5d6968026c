"""Writes the bench image's data files (read by start.py) into DIR, the same bytes every time:
48 JSON files of orders and a CSV of prices, about 6 MB."""

import csv
import json
import os
import random
import sys


def main(out):
    rng = random.Random(9)
    os.makedirs(out, exist_ok=True)
    skus = ['sku-%05d' % i for i in range(5000)]
    with open(os.path.join(out, 'prices.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['sku', 'price', 'description'])
        for s in skus:
            w.writerow([s, '%.2f' % rng.uniform(1, 500), ' '.join(rng.choice(skus) for _ in range(6))])
    for n in range(48):
        orders = [{'id': n * 1000 + i, 'sku': rng.choice(skus), 'qty': rng.randint(1, 20),
                   'customer': 'c%06d' % rng.randrange(10 ** 6), 'note': '%032x' % rng.getrandbits(128)}
                  for i in range(1000)]
        with open(os.path.join(out, 'orders-%02d.json' % n), 'w') as f:
            json.dump(orders, f)


if __name__ == '__main__':
    main(sys.argv[1])
