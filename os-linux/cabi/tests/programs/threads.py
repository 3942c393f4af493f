# Threads exchanging freshly built objects through queues (blocks allocated on
# one thread, freed on another).
import queue, threading, sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
q = queue.Queue(maxsize=1000)
results = []
lock = threading.Lock()

def produce(t):
    for i in range(n):
        q.put({"id": (t, i), "payload": [str(i)] * (i % 17), "blob": b"x" * (i % 3000)})
    q.put(None)

def consume():
    total = 0
    done = 0
    while done < 4:
        item = q.get()
        if item is None:
            done += 1
            continue
        total += len(item["payload"]) + len(item["blob"]) + item["id"][1]
    with lock:
        results.append(total)

ps = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
c = threading.Thread(target=consume)
for t in ps + [c]:
    t.start()
for t in ps + [c]:
    t.join()
print(sum(results))
