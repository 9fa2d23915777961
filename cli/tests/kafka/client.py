"""Kafka clients for the Kafka tests: two independent producers
(confluent-kafka, on librdkafka, and kafka-python, pure Python), an admin
client and a reader.

  client.py create TOPIC PARTITIONS
  client.py produce-confluent TOPIC FILE     # FILE: lines of "partition<TAB>payload"
  client.py produce-kafka-python TOPIC FILE
  client.py read TOPIC COUNT [TIMEOUT_S]     # prints JSON {key, value, headers} lines
  client.py create-bucket ENDPOINT BUCKET    # on the local S3 server (boto3)
"""
import json
import os
import sys
import time

BROKERS = os.environ.get("TIDEMARK_KAFKA", "127.0.0.1:19092")


def messages(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                partition, payload = line.split("\t", 1)
                yield int(partition), payload.replace("\\n", "\n").encode()


def create(topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BROKERS})
    futures = admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])
    for f in futures.values():
        f.result(30)
    # Wait until the metadata shows every partition.
    for _ in range(100):
        md = admin.list_topics(topic, timeout=10)
        if topic in md.topics and len(md.topics[topic].partitions) == int(partitions):
            return
        time.sleep(0.1)
    sys.exit(f"topic {topic} did not appear")


def produce_confluent(topic, path):
    from confluent_kafka import Producer

    errors = []
    # One record per batch: tansu 0.6 cannot fetch from inside a batch.
    p = Producer({"bootstrap.servers": BROKERS, "enable.idempotence": True, "linger.ms": 0, "batch.num.messages": 1})
    n = 0
    for partition, payload in messages(path):
        while True:
            try:
                p.produce(topic, payload, partition=partition,
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        p.poll(0)
    left = p.flush(60)
    if errors or left:
        sys.exit(f"confluent-kafka: {len(errors)} failed, {left} unsent: {errors[:3]}")
    print(n)


def produce_kafka_python(topic, path):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=BROKERS, acks="all", linger_ms=0, batch_size=1)
    futures = [p.send(topic, value=payload, partition=partition) for partition, payload in messages(path)]
    p.flush(60)
    for f in futures:
        f.get(timeout=60)
    print(len(futures))


def read(topic, count, timeout=60):
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=BROKERS, auto_offset_reset="earliest",
                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    got = 0
    deadline = time.time() + float(timeout)
    while got < int(count) and time.time() < deadline:
        for m in c:
            print(json.dumps({
                "key": m.key.decode() if m.key is not None else None,
                "value": m.value.decode(errors="replace"),
                "headers": {k: v.decode() for k, v in (m.headers or [])},
            }), flush=True)
            got += 1
            if got >= int(count):
                break
    c.close()


def create_bucket(endpoint, bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {
        "create": create,
        "produce-confluent": produce_confluent,
        "produce-kafka-python": produce_kafka_python,
        "read": read,
        "create-bucket": create_bucket,
    }[command](*args)
