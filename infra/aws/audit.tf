# Audit and alerting: a CloudTrail trail recording management events (every KMS call) and the data
# events of the pipeline's buckets and stream, encrypted with the storage key and validated; and
# alerts to one SNS topic for a key scheduled for deletion / disabled / re-policied, Firehose
# delivery falling behind and the consumer falling behind on the stream.

locals {
  trail_name = "${var.prefix}-data-events"
  trail_arn  = "arn:${local.partition}:cloudtrail:${local.region}:${local.account_id}:trail/${local.trail_name}"
  alerts_arn = "arn:${local.partition}:sns:${local.region}:${local.account_id}:${var.prefix}-alerts"
  key_rule   = "arn:${local.partition}:events:${local.region}:${local.account_id}:rule/${var.prefix}-kms-key-danger"
}

resource "aws_cloudtrail" "data" {
  # checkov:skip=CKV2_AWS_10:Alerts come from EventBridge rules on the trail's events (aws_cloudwatch_event_rule.kms_key_danger), not CloudWatch Logs metric filters; the log files are kept, validated and encrypted in S3.
  # checkov:skip=CKV_AWS_252:Log-file delivery notifications add no control here: the alerts topic carries the security events, and digest validation detects missing files.
  name                          = local.trail_name
  s3_bucket_name                = aws_s3_bucket.access_logs.id
  s3_key_prefix                 = "cloudtrail"
  kms_key_id                    = module.storage_key.key_arn
  enable_log_file_validation    = true
  include_global_service_events = true
  is_multi_region_trail         = true
  tags                          = local.tags

  advanced_event_selector {
    name = "Management events (every KMS call)"
    field_selector {
      field  = "eventCategory"
      equals = ["Management"]
    }
  }

  advanced_event_selector {
    name = "Object-level events of the data buckets"
    field_selector {
      field  = "eventCategory"
      equals = ["Data"]
    }
    field_selector {
      field  = "resources.type"
      equals = ["AWS::S3::Object"]
    }
    field_selector {
      field       = "resources.ARN"
      starts_with = [for b in values(local.bucket_arns) : "${b}/"]
    }
  }

  advanced_event_selector {
    name = "Record-level events of the stream"
    field_selector {
      field  = "eventCategory"
      equals = ["Data"]
    }
    field_selector {
      field  = "resources.type"
      equals = ["AWS::Kinesis::Stream"]
    }
    field_selector {
      field  = "resources.ARN"
      equals = [local.stream_arn]
    }
  }

  depends_on = [aws_s3_bucket_policy.access_logs]
}

# ------------------------------------------------------------------------------------ alerts --

resource "aws_sns_topic" "alerts" {
  name              = "${var.prefix}-alerts"
  kms_master_key_id = module.storage_key.key_arn
  tags              = local.tags
}

resource "aws_sns_topic_policy" "alerts" {
  arn = aws_sns_topic.alerts.arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "EventBridgeRule"
        Effect    = "Allow"
        Principal = { Service = "events.amazonaws.com" }
        Action    = ["sns:Publish"]
        Resource  = aws_sns_topic.alerts.arn
        Condition = { ArnEquals = { "aws:SourceArn" = local.key_rule } }
      },
      {
        Sid       = "CloudWatchAlarms"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["sns:Publish"]
        Resource  = aws_sns_topic.alerts.arn
        Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
      },
    ]
  })
}

# A key scheduled for deletion, disabled or given a new policy: the events that end in data loss
# or lock-out (AWS KMS symmetric keys do not expire; rotation is enforced by DenyRotationOff).
resource "aws_cloudwatch_event_rule" "kms_key_danger" {
  name        = "${var.prefix}-kms-key-danger"
  description = "${var.prefix}: a KMS key of the account is scheduled for deletion, disabled or re-policied"
  event_pattern = jsonencode({
    source        = ["aws.kms"]
    "detail-type" = ["AWS API Call via CloudTrail"]
    detail = {
      eventSource = ["kms.amazonaws.com"]
      eventName   = ["DisableKey", "PutKeyPolicy", "ScheduleKeyDeletion"]
    }
  })
  tags = local.tags
}

resource "aws_cloudwatch_event_target" "kms_key_danger" {
  rule = aws_cloudwatch_event_rule.kms_key_danger.name
  arn  = aws_sns_topic.alerts.arn
}

resource "aws_cloudwatch_metric_alarm" "firehose_freshness" {
  alarm_name          = "${var.prefix}-archive-delivery-late"
  alarm_description   = "Firehose has not delivered the stream archive to S3 for twice its buffering interval (delivery errors)."
  namespace           = "AWS/Firehose"
  metric_name         = "DeliveryToS3.DataFreshness"
  dimensions          = { DeliveryStreamName = "${var.prefix}-archive" }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  threshold           = 2 * var.firehose.buffering_interval_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "consumer_lag" {
  alarm_name          = "${var.prefix}-consumer-lag"
  alarm_description   = "saip's consumer is more than 15 minutes behind the stream (ingestion stalled or failing)."
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = { StreamName = "${var.prefix}-records" }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  threshold           = 900000
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  tags                = local.tags
}
