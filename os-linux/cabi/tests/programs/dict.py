# Dict/list/str-heavy work: many small objects of many sizes, growing and
# shrinking containers. Prints only order-independent results.
import hashlib, json, sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
d = {}
for i in range(n):
    d["k%d" % i] = [i, str(i) * (i % 7), {"x": i % 13}]
lst = sorted(d.items(), key=lambda kv: (len(kv[1][1]), kv[0]))
h = hashlib.sha256()
for k, v in lst[:: max(1, n // 5000)]:
    h.update(k.encode())
    h.update(v[1].encode())
text = json.dumps(lst[: n // 10])
back = json.loads(text)
words = " ".join(v[1] for _, v in lst).split()
counts = {}
for w in words:
    counts[w] = counts.get(w, 0) + 1
for i in range(0, n, 3):
    del d["k%d" % i]
s = set(d) ^ {"k%d" % i for i in range(0, n, 2)}
print(len(d), len(back), len(words), len(counts), len(s), h.hexdigest())
