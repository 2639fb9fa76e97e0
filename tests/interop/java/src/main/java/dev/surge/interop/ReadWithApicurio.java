package dev.surge.interop;

import io.apicurio.registry.serde.avro.AvroKafkaDeserializer;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.time.Instant;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import org.apache.avro.Conversions;
import org.apache.avro.LogicalType;
import org.apache.avro.LogicalTypes;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Reads surge records with nothing from surge: kafka-clients and Apicurio's stock
 * AvroKafkaDeserializer against the registry's native v3 API. surge writes the
 * Confluent framing (magic 0, 4-byte schema id, Avro body); the id is the
 * registry's contentId, which is what the ccompat API hands out.
 *
 * <p>usage: ReadWithApicurio BOOTSTRAP REGISTRY_V3_URL TOPIC COUNT
 *
 * <p>Prints one JSON object per record, {"key": ..., "value": {...}}: unions as
 * their branch's value, enums as their symbol, decimals as plain strings
 * ("19.99"), timestamp-millis as epoch milliseconds, as the Python reader does.
 */
public final class ReadWithApicurio {
  private static final Conversions.DecimalConversion DECIMAL = new Conversions.DecimalConversion();

  public static void main(String[] args) {
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
    if (args.length != 4) {
      System.err.println("usage: ReadWithApicurio BOOTSTRAP REGISTRY_V3_URL TOPIC COUNT");
      System.exit(2);
    }
    String bootstrap = args[0];
    String registryUrl = args[1];
    String topic = args[2];
    int count = Integer.parseInt(args[3]);
    // Never outlive the test that runs us.
    Instant deadline = Instant.now().plusSeconds(150);

    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(ConsumerConfig.GROUP_ID_CONFIG, "interop-" + UUID.randomUUID());
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, AvroKafkaDeserializer.class.getName());
    // surge's framing: no Apicurio headers, the id in 4 bytes after the magic
    // byte, and that id is a contentId.
    props.put("apicurio.registry.url", registryUrl);
    props.put("apicurio.registry.headers.enabled", "false");
    props.put("apicurio.registry.id-handler", "io.apicurio.registry.serde.Default4ByteIdHandler");
    props.put("apicurio.registry.use-id", "contentId");

    int seen = 0;
    try (KafkaConsumer<String, GenericRecord> consumer = new KafkaConsumer<>(props)) {
      consumer.subscribe(List.of(topic));
      while (seen < count && Instant.now().isBefore(deadline)) {
        for (ConsumerRecord<String, GenericRecord> rec : consumer.poll(Duration.ofMillis(500))) {
          StringBuilder out = new StringBuilder("{\"key\":");
          string(out, rec.key());
          out.append(",\"value\":");
          value(out, rec.value(), rec.value().getSchema());
          out.append('}');
          System.out.println(out);
          System.out.flush();
          seen++;
        }
      }
    }
    if (seen < count) {
      System.err.printf("only %d of %d records arrived%n", seen, count);
      System.exit(1);
    }
    // The registry client's HTTP threads must not keep the JVM alive.
    System.exit(0);
  }

  /** JSON for `datum` as written by `schema`. */
  private static void value(StringBuilder out, Object datum, Schema schema) {
    LogicalType logical = schema.getLogicalType();
    switch (schema.getType()) {
      case NULL -> out.append("null");
      case UNION -> value(out, datum, schema.getTypes().get(GenericData.get().resolveUnion(schema, datum)));
      case RECORD -> {
        GenericRecord record = (GenericRecord) datum;
        out.append('{');
        String sep = "";
        for (Schema.Field field : schema.getFields()) {
          out.append(sep);
          sep = ",";
          string(out, field.name());
          out.append(':');
          value(out, record.get(field.pos()), field.schema());
        }
        out.append('}');
      }
      case ARRAY -> {
        out.append('[');
        String sep = "";
        for (Object item : (List<?>) datum) {
          out.append(sep);
          sep = ",";
          value(out, item, schema.getElementType());
        }
        out.append(']');
      }
      case MAP -> {
        out.append('{');
        String sep = "";
        for (Map.Entry<?, ?> e : ((Map<?, ?>) datum).entrySet()) {
          out.append(sep);
          sep = ",";
          string(out, e.getKey().toString());
          out.append(':');
          value(out, e.getValue(), schema.getValueType());
        }
        out.append('}');
      }
      case BYTES -> {
        ByteBuffer bytes = ((ByteBuffer) datum).duplicate();
        if (logical instanceof LogicalTypes.Decimal) {
          BigDecimal d = DECIMAL.fromBytes(bytes, schema, logical);
          string(out, d.toPlainString());
        } else {
          byte[] raw = new byte[bytes.remaining()];
          bytes.get(raw);
          string(out, Base64.getEncoder().encodeToString(raw));
        }
      }
      case FIXED -> {
        GenericData.Fixed fixed = (GenericData.Fixed) datum;
        if (logical instanceof LogicalTypes.Decimal) {
          string(out, DECIMAL.fromFixed(fixed, schema, logical).toPlainString());
        } else {
          string(out, Base64.getEncoder().encodeToString(fixed.bytes()));
        }
      }
      // timestamp-millis stays epoch milliseconds: what the generic reader gives.
      case INT, LONG, FLOAT, DOUBLE, BOOLEAN -> out.append(datum);
      case STRING, ENUM -> string(out, datum.toString());
    }
  }

  private static void string(StringBuilder out, String s) {
    if (s == null) {
      out.append("null");
      return;
    }
    out.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    out.append('"');
  }
}
