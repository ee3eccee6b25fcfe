// A client of the legacy protocol written the way the earlier Spring backend is: typed
// DTO records parsed by Jackson, LocalDateTime fields (sent as Jackson's default array
// [y, M, d, H, m, s, nanos], read with the same patterns as its @JsonFormat fields),
// java.net.http.HttpClient in place of RestTemplate (which throws on HTTP 4xx/5xx, so
// every reply must be HTTP 200 unless the protocol says otherwise), and an HTTP receiver
// for push mode. Run by tests/test_legacy_java.py against a real server:
//
//   java -cp <classes>:<jackson jars> LegacyClient <base url> <receiver port> <timing runs>
//
// Prints "OK <step>" per step and "TIMING ..." for /query_stream's reference event; a
// failed check prints "FAIL <why>" and exits 1.

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializerProvider;
import com.fasterxml.jackson.databind.annotation.JsonDeserialize;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.databind.type.TypeFactory;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

public class LegacyClient {
    static final String PASSWORD = "비밀번호는 최소 몇 자 이상이어야 하나요?";
    static final String LOCKOUT = "계정 잠금은 언제 되나요?";
    static final String VPN = "VPN은 어떻게 사용하나요?";

    // ------------------------------------------------------------------ dates

    /** Timestamp T: "2025-03-04 09:15:02.123456" (a @JsonFormat pattern in the backend). */
    static final class TDate extends JsonDeserializer<LocalDateTime> {
        static final DateTimeFormatter F = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSSSSS");

        @Override
        public LocalDateTime deserialize(JsonParser p, DeserializationContext c) throws IOException {
            return LocalDateTime.parse(p.getValueAsString(), F);
        }
    }

    /** Timestamp I: ISO local time; LocalDateTime.parse rejects an offset such as +00:00. */
    static final class IDate extends JsonDeserializer<LocalDateTime> {
        @Override
        public LocalDateTime deserialize(JsonParser p, DeserializationContext c) throws IOException {
            return LocalDateTime.parse(p.getValueAsString());
        }
    }

    /** /reference dates: "yyyy-MM-dd HH:mm:ss". */
    static final class RefDate extends JsonDeserializer<LocalDateTime> {
        static final DateTimeFormatter F = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss");

        @Override
        public LocalDateTime deserialize(JsonParser p, DeserializationContext c) throws IOException {
            return LocalDateTime.parse(p.getValueAsString(), F);
        }
    }

    /** What jackson-datatype-jsr310 writes by default: [y, M, d, H, m, s, nanos]. */
    static final class ArrayDate extends JsonSerializer<LocalDateTime> {
        @Override
        public void serialize(LocalDateTime v, JsonGenerator g, SerializerProvider s) throws IOException {
            g.writeArray(
                    new int[] {v.getYear(), v.getMonthValue(), v.getDayOfMonth(), v.getHour(), v.getMinute(),
                        v.getSecond(), v.getNano()},
                    0, 7);
        }
    }

    // ------------------------------------------------------------------- DTOs

    record QueryRequest(
            @JsonProperty("qry_id") String qryId,
            @JsonProperty("user_id") String userId,
            @JsonProperty("page_id") String pageId,
            @JsonProperty("qry_contents") String qryContents,
            @JsonProperty("qry_time") LocalDateTime qryTime,
            @JsonProperty("auth_class") String authClass,
            @JsonProperty("rag") Boolean rag,
            @JsonProperty("use_rag") Boolean useRag,
            @JsonProperty("image_data") String imageData) {}

    record ErrorObject(
            @JsonProperty("status_code") int statusCode,
            @JsonProperty("result") String result,
            @JsonProperty("qry_id") String qryId,
            @JsonProperty("detail") String detail,
            @JsonProperty("evt_time") @JsonDeserialize(using = TDate.class) LocalDateTime evtTime) {}

    record Item(
            @JsonProperty("rsp_type") String rspType,
            @JsonProperty("rsp_tit") String rspTit,
            @JsonProperty("rsp_data") JsonNode rspData) {}

    record RetrievalEntry(
            @JsonProperty("rsp_tit") String rspTit,
            @JsonProperty("rsp_data") String rspData,
            @JsonProperty("chunk_id") String chunkId) {}

    record AnswerText(@JsonProperty("rsp_type") String rspType, @JsonProperty("rsp_data") String rspData) {}

    record Envelope(
            @JsonProperty("status_code") int statusCode,
            @JsonProperty("result") String result,
            @JsonProperty("detail") String detail,
            @JsonProperty("continue") String cont,
            @JsonProperty("qry_id") String qryId,
            @JsonProperty("rsp_time") @JsonDeserialize(using = TDate.class) LocalDateTime rspTime,
            @JsonProperty("data_list") List<Item> dataList) {}

    record ReferenceEvent(
            @JsonProperty("type") String type,
            @JsonProperty("status_code") int statusCode,
            @JsonProperty("result") String result,
            @JsonProperty("detail") String detail,
            @JsonProperty("evt_time") @JsonDeserialize(using = IDate.class) LocalDateTime evtTime,
            @JsonProperty("data_list") List<Item> dataList) {}

    record PushedReference(
            @JsonProperty("type") String type,
            @JsonProperty("status_code") int statusCode,
            @JsonProperty("result") String result,
            @JsonProperty("detail") String detail,
            @JsonProperty("evt_time") @JsonDeserialize(using = IDate.class) LocalDateTime evtTime,
            @JsonProperty("data_list") List<Item> dataList,
            @JsonProperty("qry_id") String qryId,
            @JsonProperty("continue") String cont,
            @JsonProperty("rsp_time") @JsonDeserialize(using = TDate.class) LocalDateTime rspTime,
            @JsonProperty("rsp_tit") String rspTit) {}

    record StreamEvent(
            @JsonProperty("type") String type,
            @JsonProperty("answer") String answer,
            @JsonProperty("message") String message) {}

    record Message(
            @JsonProperty("role") String role,
            @JsonProperty("content") String content,
            @JsonProperty("references") List<String> references) {}

    record History(@JsonProperty("history") List<Message> history) {}

    record Reference(
            @JsonProperty("file_name") String fileName,
            @JsonProperty("title") String title,
            @JsonProperty("text") String text,
            @JsonProperty("date") @JsonDeserialize(using = RefDate.class) LocalDateTime date) {}

    record References(@JsonProperty("references") List<Reference> references) {}

    // ------------------------------------------------------------------ plumbing

    static final ObjectMapper JSON = new ObjectMapper()
            .registerModule(new SimpleModule().addSerializer(LocalDateTime.class, new ArrayDate()))
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, true)
            .configure(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES, true);
    // HTTP/1.1 as RestTemplate speaks it (the JDK client's default h2c upgrade is not
    // what the backend sends, and uvicorn ignores upgrade requests).
    static final HttpClient HTTP = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();
    static String base;

    static void check(boolean condition, String why) {
        if (!condition) {
            throw new IllegalStateException(why);
        }
    }

    static void recent(LocalDateTime moment, String what) {
        Duration off = Duration.between(moment, LocalDateTime.now()).abs();
        check(off.toSeconds() < 300, what + " is not local time now: " + moment);
    }

    static QueryRequest ask(String qryId, String pageId, String question) {
        // Unset Boolean/String fields are written as null, as Jackson writes a Spring DTO.
        return new QueryRequest(qryId, "kim", pageId, question,
                LocalDateTime.of(2025, 3, 4, 9, 15, 2, 123456789), null, null, null, null);
    }

    static HttpRequest.Builder request(String path) {
        return HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(60));
    }

    static HttpRequest post(String path, Object body) throws IOException {
        return request(path)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(JSON.writeValueAsBytes(body)))
                .build();
    }

    /** RestTemplate style: anything but HTTP 200 is an exception. */
    static <T> T exchange(HttpRequest req, Class<T> type) throws Exception {
        HttpResponse<String> response = HTTP.send(req, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        check(response.statusCode() == 200, req.uri() + " answered HTTP " + response.statusCode() + ": "
                + response.body());
        return JSON.readValue(response.body(), type);
    }

    static String get(String path, String... params) {
        List<String> pairs = new ArrayList<>();
        for (int i = 0; i < params.length; i += 2) {
            pairs.add(params[i] + "=" + URLEncoder.encode(params[i + 1], StandardCharsets.UTF_8));
        }
        return path + "?" + String.join("&", pairs);
    }

    static <T> List<T> listOf(JsonNode node, Class<T> type) throws IOException {
        return JSON.readerFor(TypeFactory.defaultInstance().constructCollectionType(List.class, type))
                .readValue(node);
    }

    static List<RetrievalEntry> retrieval(Item item) throws IOException {
        check("R".equals(item.rspType()) && "사내 문서".equals(item.rspTit()), "not the R item: " + item);
        List<RetrievalEntry> entries = listOf(item.rspData(), RetrievalEntry.class);
        for (int i = 0; i < entries.size(); i++) {
            check(entries.get(i).rspTit().startsWith((i + 1) + "번째 검색데이터: "), "numbering: " + entries.get(i));
        }
        return entries;
    }

    static String answer(Item item, int n) throws IOException {
        check("A".equals(item.rspType()) && ("답변" + n).equals(item.rspTit()), "not answer " + n + ": " + item);
        List<AnswerText> texts = listOf(item.rspData(), AnswerText.class);
        check(texts.size() == 1 && "TT".equals(texts.get(0).rspType()), "answer item: " + item);
        return texts.get(0).rspData();
    }

    static List<String> ids(List<RetrievalEntry> entries) {
        return entries.stream().map(RetrievalEntry::chunkId).collect(Collectors.toList());
    }

    // ------------------------------------------------------------------ steps

    static String page() {
        return "java-" + UUID.randomUUID();
    }

    static List<String> query(String pageId) throws Exception {
        Envelope body = exchange(post("/query", ask("J-1", pageId, PASSWORD)), Envelope.class);
        check(body.statusCode() == 200 && "OK".equals(body.result()) && "".equals(body.detail()), "envelope " + body);
        check("E".equals(body.cont()) && "J-1".equals(body.qryId()), "continue/qry_id " + body);
        recent(body.rspTime(), "rsp_time");
        check(body.dataList().size() == 2, "data_list " + body.dataList());
        List<RetrievalEntry> entries = retrieval(body.dataList().get(0));
        check(!entries.isEmpty() && entries.get(0).rspTit().endsWith("(출처:정보보안정책.txt)"), "first hit " + entries);
        check(answer(body.dataList().get(1), 1).contains("10자"), "answer " + body.dataList().get(1));
        System.out.println("OK /query");
        return ids(entries);
    }

    /** Returns the milliseconds to the reference event. */
    static double stream(String pageId, String question, boolean print) throws Exception {
        long started = System.nanoTime();
        HttpResponse<java.util.stream.Stream<String>> response = HTTP.send(
                post("/query_stream", ask("J-2", pageId, question)), HttpResponse.BodyHandlers.ofLines());
        check(response.statusCode() == 200, "/query_stream answered HTTP " + response.statusCode());
        check(response.headers().firstValue("content-type").orElse("").startsWith("text/event-stream"), "type");
        double toReference = -1;
        List<String> lines = new ArrayList<>();
        StringBuilder text = new StringBuilder();
        for (String line : (Iterable<String>) response.body()::iterator) {
            if (line.isEmpty()) {
                continue;
            }
            check(line.startsWith("data: "), "not a data line: " + line);
            if (lines.isEmpty()) {
                toReference = (System.nanoTime() - started) / 1e6;
                ReferenceEvent reference = JSON.readValue(line.substring(6), ReferenceEvent.class);
                check("reference".equals(reference.type()) && reference.statusCode() == 200, "reference " + reference);
                check("Reference data".equals(reference.detail()), "detail " + reference.detail());
                recent(reference.evtTime(), "evt_time");
                check(!retrieval(reference.dataList().get(0)).isEmpty(), "no references");
            } else {
                StreamEvent event = JSON.readValue(line.substring(6), StreamEvent.class);
                check("answer".equals(event.type()) && event.answer() != null, "event " + line);
                text.append(event.answer());
            }
            lines.add(line);
        }
        check(lines.size() >= 2 && text.length() > 0, "stream " + lines);
        if (print) {
            System.out.println("OK /query_stream");
        }
        return toReference;
    }

    static void push(int receiverPort) throws Exception {
        BlockingQueue<byte[]> received = new LinkedBlockingQueue<>();
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", receiverPort), 0);
        server.createContext("/receive", exchange -> {
            received.add(exchange.getRequestBody().readAllBytes());
            exchange.sendResponseHeaders(200, -1);
            exchange.close();
        });
        server.start();
        try {
            String qryId = "J-push-" + UUID.randomUUID();
            ErrorObject ack = exchange(post("/queryToSLLM", ask(qryId, page(), LOCKOUT)), ErrorObject.class);
            check(ack.statusCode() == 200 && "수신양호".equals(ack.result()) && qryId.equals(ack.qryId()), "ack " + ack);
            recent(ack.evtTime(), "ack evt_time");
            byte[] first = received.poll(60, TimeUnit.SECONDS);
            check(first != null, "no reference pushed");
            PushedReference reference = JSON.readValue(first, PushedReference.class);
            check("reference".equals(reference.type()) && "C".equals(reference.cont()), "pushed " + reference);
            check(qryId.equals(reference.qryId()) && "Reference".equals(reference.rspTit()), "pushed " + reference);
            recent(reference.evtTime(), "pushed evt_time");
            recent(reference.rspTime(), "pushed rsp_time");
            check(!retrieval(reference.dataList().get(0)).isEmpty(), "pushed references");
            StringBuilder text = new StringBuilder();
            for (int n = 1; ; n++) {
                byte[] next = received.poll(60, TimeUnit.SECONDS);
                check(next != null, "the push never ended (no continue E)");
                Envelope batch = JSON.readValue(next, Envelope.class);
                check(batch.statusCode() == 200 && qryId.equals(batch.qryId()), "batch " + batch);
                recent(batch.rspTime(), "batch rsp_time");
                text.append(answer(batch.dataList().get(0), n));
                if ("E".equals(batch.cont())) {
                    break;
                }
                check("C".equals(batch.cont()), "continue " + batch.cont());
            }
            check(text.length() > 0, "empty pushed answer");
            System.out.println("OK /queryToSLLM");
        } finally {
            server.stop(0);
        }
    }

    static void historyAndReference(String pageId, List<String> shown) throws Exception {
        History history = exchange(request(get("/history", "request_id", pageId)).GET().build(), History.class);
        List<Message> messages = history.history();
        check(messages.size() == 2 && "human".equals(messages.get(0).role()), "history " + messages);
        check(PASSWORD.equals(messages.get(0).content()) && messages.get(0).references() == null, "human " + messages);
        check("ai".equals(messages.get(1).role()) && shown.equals(messages.get(1).references()), "ai " + messages);
        System.out.println("OK /history");
        References refs = exchange(
                request(get("/reference", "request_id", pageId, "msg_index", "1")).GET().build(), References.class);
        check(refs.references().size() == shown.size(), "reference count " + refs);
        Reference top = refs.references().get(0);
        check("정보보안정책.txt".equals(top.fileName()), "file " + top);
        check(top.date().equals(LocalDateTime.of(2024, 11, 1, 0, 0)), "date " + top.date());
        System.out.println("OK /reference");
    }

    static void errors() throws Exception {
        // RestTemplate would throw on a 4xx: the refusal comes as HTTP 200 + status_code.
        ErrorObject empty = exchange(post("/query", ask("J-err", page(), "")), ErrorObject.class);
        check(empty.statusCode() == 400 && "J-err".equals(empty.qryId()), "empty question " + empty);
        recent(empty.evtTime(), "error evt_time");
        ErrorObject missing = exchange(request("/history").GET().build(), ErrorObject.class);
        check(missing.statusCode() == 400, "missing request_id " + missing);
        System.out.println("OK errors");
    }

    public static void main(String[] args) {
        base = args[0];
        int receiverPort = Integer.parseInt(args[1]);
        int runs = Integer.parseInt(args[2]);
        try {
            String pageId = page();
            List<String> shown = query(pageId);
            historyAndReference(pageId, shown);
            stream(page(), LOCKOUT, true);
            push(receiverPort);
            errors();
            String[] questions = {PASSWORD, LOCKOUT, VPN};
            List<Double> times = new ArrayList<>();
            for (int i = 0; i < runs; i++) {
                times.add(stream(page(), questions[i % questions.length], false));
            }
            if (!times.isEmpty()) {
                Collections.sort(times);
                double p50 = times.get((int) Math.round(0.50 * (times.size() - 1)));
                double p95 = times.get((int) Math.round(0.95 * (times.size() - 1)));
                System.out.printf("TIMING runs=%d p50_ms=%.1f p95_ms=%.1f%n", times.size(), p50, p95);
            }
            System.out.println("ALL OK");
        } catch (Exception e) {
            System.out.println("FAIL " + e);
            e.printStackTrace(System.out);
            System.exit(1);
        }
    }
}
