import KafkaInStage
import SwitchyardCore

PipelineLoop.runStage(.kafkaIn) { try KafkaIn(context: $0) }
