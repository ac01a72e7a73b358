import CRdKafka
import SwitchyardKafka

/// librdkafka's built-in mock Kafka cluster (the engine behind `test.mock.num.brokers`), in this process, for
/// tests: point producers and consumers at `bootstrapServers`. Freed in deinit. (Only test targets depend on
/// this module.)
// @unchecked Sendable: the two handles never change after init and librdkafka's mock cluster calls are thread-safe.
public final class KafkaMockCluster: @unchecked Sendable {
    private let host: OpaquePointer
    private let cluster: OpaquePointer
    /// `host:port,...` of the mock brokers.
    public let bootstrapServers: String

    public init(brokers: Int = 3) throws {
        guard let conf = rd_kafka_conf_new() else { throw failure("rd_kafka_conf_new failed") }
        var errbuf = [CChar](repeating: 0, count: 512)
        // The mock cluster lives on a handle of its own; silence that handle's logs.
        _ = rd_kafka_conf_set(conf, "log_level", "0", &errbuf, errbuf.count)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errbuf, errbuf.count) else {
            rd_kafka_conf_destroy(conf)
            let message = errbuf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw failure("cannot create the mock cluster's handle: \(message)")
        }
        guard let mc = rd_kafka_mock_cluster_new(rk, Int32(brokers)) else {
            rd_kafka_destroy(rk)
            throw failure("rd_kafka_mock_cluster_new failed")
        }
        self.host = rk
        self.cluster = mc
        self.bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(mc))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(host)
    }

    /// Creates a topic (the mock cluster also auto-creates topics on first use).
    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws {
        let err = rd_kafka_mock_topic_create(cluster, name, partitions, replicationFactor)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw kafkaError(err) }
    }

    /// Takes one mock broker down (connections closed, new ones refused) or brings it back.
    public func setBroker(_ id: Int32, up: Bool) throws {
        let err = up ? rd_kafka_mock_broker_set_up(cluster, id) : rd_kafka_mock_broker_set_down(cluster, id)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw kafkaError(err) }
    }
}

private func failure(_ message: String) -> KafkaError {
    KafkaError(code: RD_KAFKA_RESP_ERR__FAIL.rawValue, name: "_FAIL", message: message)
}

private func kafkaError(_ err: rd_kafka_resp_err_t) -> KafkaError {
    KafkaError(code: err.rawValue, name: String(cString: rd_kafka_err2name(err)), message: String(cString: rd_kafka_err2str(err)))
}

extension KafkaProducer {
    /// Queues one record from byte arrays (see `produce(topic:key:value:id:)`).
    public func produce(topic: String, key: [UInt8]?, value: [UInt8], id: UInt64) -> KafkaProduceResult {
        value.withUnsafeBytes { v in
            if let key {
                return key.withUnsafeBytes { k in produce(topic: topic, key: k, value: v, id: id) }
            }
            return produce(topic: topic, key: nil, value: v, id: id)
        }
    }
}
