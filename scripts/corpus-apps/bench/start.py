"""The bench image's application (scripts/image-corpus bench): what a Python service does before it
is ready, imports of a few dozen standard modules and a read of its data files, then "ready"."""

import argparse  # noqa: F401 - the imports are the workload
import asyncio  # noqa: F401
import base64  # noqa: F401
import collections
import concurrent.futures  # noqa: F401
import configparser  # noqa: F401
import csv
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import email.message  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import glob
import gzip  # noqa: F401
import hashlib
import hmac  # noqa: F401
import html.parser  # noqa: F401
import http.client  # noqa: F401
import http.server  # noqa: F401
import inspect  # noqa: F401
import ipaddress  # noqa: F401
import json
import logging
import logging.handlers  # noqa: F401
import multiprocessing  # noqa: F401
import os
import pathlib  # noqa: F401
import pickle  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import secrets  # noqa: F401
import shutil  # noqa: F401
import socket  # noqa: F401
import sqlite3
import ssl  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import subprocess  # noqa: F401
import tarfile  # noqa: F401
import tempfile  # noqa: F401
import threading  # noqa: F401
import typing  # noqa: F401
import unittest.mock  # noqa: F401
import urllib.parse  # noqa: F401
import urllib.request  # noqa: F401
import uuid  # noqa: F401
import xml.etree.ElementTree  # noqa: F401
import zipfile  # noqa: F401
import zlib  # noqa: F401

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def main():
    logging.basicConfig(level=logging.WARNING)
    records = []
    for path in sorted(glob.glob(os.path.join(DATA, '*.json'))):
        with open(path) as f:
            records.extend(json.load(f))
    with open(os.path.join(DATA, 'prices.csv'), newline='') as f:
        prices = {row['sku']: float(row['price']) for row in csv.DictReader(f)}
    db = sqlite3.connect(':memory:')
    db.execute('create table orders (id integer, sku text, qty integer)')
    db.executemany('insert into orders values (?, ?, ?)', ((r['id'], r['sku'], r['qty']) for r in records))
    total = sum(qty * prices.get(sku, 0.0) for sku, qty in db.execute('select sku, qty from orders'))
    skus = collections.Counter(r['sku'] for r in records)
    digest = hashlib.sha256(json.dumps(skus.most_common(3)).encode()).hexdigest()[:12]
    print(f'ready: {len(records)} orders, {len(prices)} prices, total {total:.2f}, {digest}', flush=True)


if __name__ == '__main__':
    main()
