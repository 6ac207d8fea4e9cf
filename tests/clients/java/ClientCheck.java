// The Java client (org.apache.kafka:kafka-clients, the version tests/kafka/pom.xml pins), driven
// by tests/e2e/test_client_matrix.py. Run as a single-file program against the cached Kafka jars:
//
//   java -cp '<kafka lib>/*' tests/clients/java/ClientCheck.java COMMAND ARGS...
//
// Each command does one scenario step and prints one JSON object on stdout: what the client showed
// its user (exception classes and messages) and what it read, so that the test asserts on it.
//
//   admin BOOTSTRAP GOOD_TOPIC BAD_TOPIC    create (3 partitions), describe, refused create, delete
//   produce BOOTSTRAP TOPIC PARTITION VALUE...  one idempotent acks=all producer, each send awaited
//   produce-spread BOOTSTRAP TOPIC N V1..VN L1..LN  one request across partitions 0..N-1 (value i
//                                               to partition i; a value "nokey:..." is sent without
//                                               a key), then L1..LN the same way, keyed, later
//   consume BOOTSTRAP TOPIC GROUP PROTOCOL N    a group member (classic|consumer) reads N, commits
//   txn BOOTSTRAP TOPIC TXN_ID                  commit 3 records, abort 3, read_committed reads
//   addresses BOOTSTRAP TOPIC                   every broker and leader address the client learns
//   reassign BOOTSTRAP TOPIC PARTITION IDS      move a partition's replicas (IDS: 4,1,2; the first
//                                               preferred), wait for it, elect the preferred leader

import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.*;

public class ClientCheck {
    public static void main(String[] a) {
        try {
            run(a);
        } catch (Throwable t) {
            // Reported here: the source launcher cannot trim the stack of an exception made on a
            // client's I/O thread, and would hide it behind its own.
            Throwable cause = t instanceof ExecutionException && t.getCause() != null ? t.getCause() : t;
            System.out.println(json(Map.of("fatal", cause.getClass().getName(),
                    "message", String.valueOf(cause.getMessage()))));
            System.out.flush();
            System.exit(1);
        }
    }

    static void run(String[] a) throws Exception {
        String out;
        switch (a[0]) {
            case "admin" -> out = admin(a[1], a[2], a[3]);
            case "produce" -> out = produce(a[1], a[2], Integer.parseInt(a[3]), Arrays.copyOfRange(a, 4, a.length));
            case "produce-spread" -> {
                int n = Integer.parseInt(a[3]);
                out = produceSpread(a[1], a[2], Arrays.copyOfRange(a, 4, 4 + n),
                        Arrays.copyOfRange(a, 4 + n, 4 + 2 * n));
            }
            case "consume" -> out = consume(a[1], a[2], a[3], a[4], Integer.parseInt(a[5]));
            case "consume-assigned" -> out = consumeAssigned(a[1], a[2], Integer.parseInt(a[3]), a.length > 4 && a[4].equals("from-zero"));
            case "txn" -> out = txn(a[1], a[2], a[3]);
            case "addresses" -> out = addresses(a[1], a[2]);
            case "reassign" -> out = reassign(a[1], a[2], Integer.parseInt(a[3]), a[4]);
            default -> throw new IllegalArgumentException(a[0]);
        }
        System.out.println(out);
        System.out.flush();
        System.exit(0);
    }

    static Properties base(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "30000");
        String user = System.getenv("MESHGATE_SASL_USER");
        if (user != null) {
            p.put("security.protocol", "SASL_PLAINTEXT");
            p.put("sasl.mechanism", "PLAIN");
            p.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required username=\""
                    + user + "\" password=\"" + System.getenv("MESHGATE_SASL_PASSWORD") + "\";");
        }
        return p;
    }

    static String admin(String bootstrap, String good, String bad) throws Exception {
        Map<String, Object> r = new LinkedHashMap<>();
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.createTopics(List.of(new NewTopic(good, 3, (short) 1))).all().get();
            r.put("created", true);
            TopicDescription d = admin.describeTopics(List.of(good)).allTopicNames().get().get(good);
            r.put("partitions", d.partitions().size());
            try {
                admin.createTopics(List.of(new NewTopic(bad, 3, (short) 1))).all().get();
                r.put("bad_error", null);
            } catch (ExecutionException e) {
                r.put("bad_error", e.getCause().getClass().getSimpleName());
                r.put("bad_message", e.getCause().getMessage());
            }
            admin.deleteTopics(List.of(good)).all().get();
            r.put("deleted", true);
        }
        return json(r);
    }

    static KafkaProducer<String, String> producer(String bootstrap, Map<String, String> extra) {
        Properties p = base(bootstrap);
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("delivery.timeout.ms", "30000");
        p.put("linger.ms", "0");
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static Map<String, Object> outcome(Future<RecordMetadata> f) {
        Map<String, Object> o = new LinkedHashMap<>();
        try {
            RecordMetadata m = f.get(40, TimeUnit.SECONDS);
            o.put("ok", true);
            o.put("partition", m.partition());
            o.put("offset", m.offset());
        } catch (ExecutionException e) {
            o.put("ok", false);
            o.put("error", e.getCause().getClass().getSimpleName());
            o.put("message", e.getCause().getMessage());
        } catch (Exception e) {
            o.put("ok", false);
            o.put("error", e.getClass().getSimpleName());
            o.put("message", e.getMessage());
        }
        return o;
    }

    static String produce(String bootstrap, String topic, int partition, String[] values) {
        List<Object> results = new ArrayList<>();
        try (KafkaProducer<String, String> p = producer(bootstrap, Map.of())) {
            for (String v : values) {
                results.add(outcome(p.send(new ProducerRecord<>(topic, partition, "k", v))));
            }
        }
        return json(Map.of("results", results));
    }

    static String produceSpread(String bootstrap, String topic, String[] values, String[] laterValues) {
        // linger lets every record join one request: one batch per partition, keys null.
        List<Future<RecordMetadata>> fs = new ArrayList<>();
        List<Object> results = new ArrayList<>();
        try (KafkaProducer<String, String> p = producer(bootstrap, Map.of("linger.ms", "500"))) {
            for (int i = 0; i < values.length; i++) {
                String key = values[i].startsWith("nokey:") ? null : "key";
                fs.add(p.send(new ProducerRecord<>(topic, i, key, values[i])));
            }
            p.flush();
            for (Future<RecordMetadata> f : fs) results.add(outcome(f));
            // Later sends of the same producer, after the partial rejection.
            List<Future<RecordMetadata>> later = new ArrayList<>();
            for (int i = 0; i < laterValues.length; i++) {
                later.add(p.send(new ProducerRecord<>(topic, i, "key", laterValues[i])));
            }
            p.flush();
            List<Object> laterResults = new ArrayList<>();
            for (Future<RecordMetadata> f : later) laterResults.add(outcome(f));
            return json(Map.of("results", results, "later", laterResults));
        }
    }

    static String consume(String bootstrap, String topic, String group, String protocol, int n) {
        Properties p = base(bootstrap);
        p.put("group.id", group);
        p.put("group.protocol", protocol);
        if (protocol.equals("classic")) {
            p.put("session.timeout.ms", "10000");
            p.put("heartbeat.interval.ms", "1000");
        }
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(topic));
            long end = System.currentTimeMillis() + 45_000;
            while (values.size() < n && System.currentTimeMillis() < end) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    if (values.size() < n) {
                        values.add(r.value());
                        c.commitSync(Map.of(new TopicPartition(r.topic(), r.partition()),
                                new OffsetAndMetadata(r.offset() + 1)));
                    }
                }
            }
            // Settle: anything more than asked for would show here (it is not committed).
            long settle = System.currentTimeMillis() + 1500;
            int extra = 0;
            while (System.currentTimeMillis() < settle) extra += c.poll(Duration.ofMillis(300)).count();
            return json(Map.of("values", values, "extra_seen", extra));
        }
    }

    /**
     * Reads partition 0 of a topic from its start, without a group; the error class if refused.
     * `fromZero` seeks to offset 0 instead of asking for the log start (no ListOffsets: the
     * first request about the topic is a Fetch, in a fetch session).
     */
    static String consumeAssigned(String bootstrap, String topic, int n, boolean fromZero) {
        Properties p = base(bootstrap);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            if (fromZero) c.seek(tp, 0); else c.seekToBeginning(List.of(tp));
            long end = System.currentTimeMillis() + 30_000;
            while (values.size() < n && System.currentTimeMillis() < end) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) values.add(r.value());
            }
            return json(Map.of("values", values));
        } catch (KafkaException e) {
            return json(Map.of("error", e.getClass().getSimpleName(), "values", values));
        }
    }

    static String order(String id, double total) {
        return "{\"order_id\": \"" + id + "\", \"customer_id\": \"c\", \"order_total\": " + total + "}";
    }

    static String txn(String bootstrap, String topic, String txnId) throws Exception {
        Map<String, Object> r = new LinkedHashMap<>();
        try (KafkaProducer<String, String> p = producer(bootstrap, Map.of("transactional.id", txnId))) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 3; i++) p.send(new ProducerRecord<>(topic, 0, "k", order("committed-" + i, 10)));
            p.commitTransaction();
            p.beginTransaction();
            for (int i = 0; i < 3; i++) p.send(new ProducerRecord<>(topic, 0, "k", order("aborted-" + i, 10)));
            p.flush();
            p.abortTransaction();
            // A transaction with a record the contract refuses: the commit must fail, and the
            // producer aborts it.
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 1, "k", order("refused-txn-good", 10)));
            p.send(new ProducerRecord<>(topic, 0, "k", order("refused-txn-bad", 0)));
            try {
                p.commitTransaction();
                r.put("refused_commit", null);
            } catch (KafkaException e) {
                r.put("refused_commit", e.getClass().getSimpleName() + ": " + e.getMessage());
                p.abortTransaction();
            }
            // The producer carries on with a new transaction.
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, "k", order("after-0", 10)));
            p.commitTransaction();
        }
        Properties c = base(bootstrap);
        c.put("group.id", "txn-" + txnId);
        c.put("isolation.level", "read_committed");
        c.put("auto.offset.reset", "earliest");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.subscribe(List.of(topic));
            long end = System.currentTimeMillis() + 20_000;
            while (System.currentTimeMillis() < end && values.size() < 4) {
                for (ConsumerRecord<String, String> rec : consumer.poll(Duration.ofMillis(500))) values.add(rec.value());
            }
            long settle = System.currentTimeMillis() + 1500;
            while (System.currentTimeMillis() < settle) {
                for (ConsumerRecord<String, String> rec : consumer.poll(Duration.ofMillis(300))) values.add(rec.value());
            }
        }
        r.put("read_committed", values);
        return json(r);
    }

    static String addresses(String bootstrap, String topic) throws Exception {
        Set<String> seen = new TreeSet<>();
        try (Admin admin = Admin.create(base(bootstrap))) {
            for (Node n : admin.describeCluster().nodes().get()) seen.add(n.host() + ":" + n.port());
            Node controller = admin.describeCluster().controller().get();
            if (controller != null && controller.id() >= 0) seen.add(controller.host() + ":" + controller.port());
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            for (TopicPartitionInfo p : d.partitions()) {
                seen.add(p.leader().host() + ":" + p.leader().port());
                for (Node n : p.replicas()) seen.add(n.host() + ":" + n.port());
            }
        }
        try (KafkaProducer<String, String> p = producer(bootstrap, Map.of())) {
            for (PartitionInfo info : p.partitionsFor(topic)) seen.add(info.leader().host() + ":" + info.leader().port());
        }
        return json(Map.of("addresses", new ArrayList<>(seen)));
    }

    static String reassign(String bootstrap, String topic, int partition, String ids) throws Exception {
        List<Integer> replicas = Arrays.stream(ids.split(",")).map(Integer::parseInt).toList();
        TopicPartition tp = new TopicPartition(topic, partition);
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.alterPartitionReassignments(Map.of(tp, Optional.of(new NewPartitionReassignment(replicas))))
                    .all().get();
            long end = System.currentTimeMillis() + 60_000;
            while (!admin.listPartitionReassignments(Set.of(tp)).reassignments().get().isEmpty()) {
                if (System.currentTimeMillis() > end) throw new TimeoutException("reassignment never finished");
                Thread.sleep(200);
            }
            while (true) {
                try {
                    admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).all().get();
                    break;
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof org.apache.kafka.common.errors.ElectionNotNeededException) break;
                    if (System.currentTimeMillis() > end) throw e;
                    Thread.sleep(500);
                }
            }
            // The election is done on the controller; the broker that answers describeTopics may
            // learn of it a moment later, so read until the preferred replica leads (or give up
            // and report what leads).
            Node leader;
            while (true) {
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                leader = d.partitions().get(partition).leader();
                if ((leader != null && leader.id() == replicas.get(0)) || System.currentTimeMillis() > end) break;
                Thread.sleep(200);
            }
            return json(Map.of("leader", leader.id(), "leader_address", leader.host() + ":" + leader.port()));
        }
    }

    // A small JSON writer: strings, numbers, booleans, null, lists and maps.
    static String json(Object o) {
        if (o == null) return "null";
        if (o instanceof String s) {
            StringBuilder b = new StringBuilder("\"");
            for (char ch : s.toCharArray()) {
                switch (ch) {
                    case '"' -> b.append("\\\"");
                    case '\\' -> b.append("\\\\");
                    case '\n' -> b.append("\\n");
                    case '\r' -> b.append("\\r");
                    case '\t' -> b.append("\\t");
                    default -> {
                        if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch));
                        else b.append(ch);
                    }
                }
            }
            return b.append('"').toString();
        }
        if (o instanceof Number || o instanceof Boolean) return o.toString();
        if (o instanceof Map<?, ?> m) {
            return m.entrySet().stream().map(e -> json(e.getKey().toString()) + ":" + json(e.getValue()))
                    .collect(Collectors.joining(",", "{", "}"));
        }
        if (o instanceof Collection<?> c) {
            return c.stream().map(ClientCheck::json).collect(Collectors.joining(",", "[", "]"));
        }
        return json(o.toString());
    }
}
