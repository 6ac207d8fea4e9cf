// The Java client's side of benches/dead_letter.py (`--client java`): one kafka-clients producer
// with the client's defaults for idempotence (on) and the bench's settings (acks=all,
// linger.ms=5, batch.size 64 KiB), sending --records values cycled from a file as fast as the
// client takes them. It counts every record completed, delivered or refused, and prints one JSON
// object shaped as benches/producer.py's. Run as a single-file program on the cached Kafka jars:
//
//   java -cp '<kafka lib>/*' benches/support/SaturatingProducer.java BOOTSTRAP TOPIC RECORDS FILE

import java.nio.file.*;
import java.util.*;
import java.util.concurrent.atomic.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.serialization.*;

public class SaturatingProducer {
    public static void main(String[] a) throws Exception {
        String bootstrap = a[0], topic = a[1];
        int records = Integer.parseInt(a[2]);
        List<byte[]> values = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(a[3]))) {
            if (!line.isBlank()) values.add(line.getBytes());
        }
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("linger.ms", "5");
        p.put("batch.size", "65536");
        p.put("buffer.memory", String.valueOf(256L << 20));
        // A refused batch is final: the bench counts it, it does not retry it.
        p.put("delivery.timeout.ms", "120000");
        AtomicLong errors = new AtomicLong();
        Map<String, Long> errorNames = new TreeMap<>();
        long bytes = 0;
        try (Producer<byte[], byte[]> producer =
                new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            // Warm-up outside the measured window: metadata, connections, the producer id.
            producer.send(new ProducerRecord<>(topic, values.get(0))).get();
            long start = System.nanoTime();
            Callback onCompletion = (metadata, e) -> {
                if (e != null) {
                    errors.incrementAndGet();
                    synchronized (errorNames) {
                        errorNames.merge(e.getClass().getSimpleName(), 1L, Long::sum);
                    }
                }
            };
            for (int n = 0; n < records; n++) {
                byte[] v = values.get(n % values.size());
                producer.send(new ProducerRecord<>(topic, v), onCompletion);
                bytes += v.length;
            }
            producer.flush();
            double seconds = (System.nanoTime() - start) / 1e9;
            StringBuilder names = new StringBuilder("{");
            synchronized (errorNames) {
                errorNames.forEach((k, v) -> names.append(names.length() > 1 ? ", " : "")
                        .append('"').append(k).append("\": ").append(v));
            }
            names.append('}');
            System.out.printf(Locale.ROOT,
                    "{\"mode\": \"saturate\", \"records\": %d, \"errors\": %d, \"error_names\": %s, "
                            + "\"seconds\": %.3f, \"records_per_s\": %.1f, \"bytes\": %d}%n",
                    records, errors.get(), names, seconds, records / seconds, bytes);
        }
    }
}
