# Shared mock values for `mock_provider "aws" { source = "./tests/mocks" }` in every test file:
# resources and data sources whose ARNs/IDs the modules read need realistic defaults.

mock_resource "aws_kms_key" {
  defaults = {
    arn    = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
    key_id = "0a1b2c3d-0000-4000-8000-00000000abcd"
  }
}
mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::123456789012:role/mock-role"
  }
}
mock_resource "aws_s3_bucket" {
  defaults = {
    arn = "arn:aws:s3:::mock-bucket"
  }
}
mock_resource "aws_kinesis_stream" {
  defaults = {
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/mock-records"
  }
}
mock_resource "aws_kinesis_firehose_delivery_stream" {
  defaults = {
    arn = "arn:aws:firehose:eu-west-1:123456789012:deliverystream/mock-archive"
  }
}
mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
    arn        = "arn:aws:iam::123456789012:user/ci"
  }
}
mock_data "aws_region" {
  defaults = {
    name = "eu-west-1"
  }
}
mock_data "aws_partition" {
  defaults = {
    partition = "aws"
  }
}
mock_resource "aws_sns_topic" {
  defaults = {
    arn = "arn:aws:sns:eu-west-1:123456789012:saip-test-alerts"
  }
}
mock_resource "aws_security_group" {
  defaults = {
    id  = "sg-0123456789abcdef0"
    arn = "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0123456789abcdef0"
  }
}
mock_resource "aws_secretsmanager_secret" {
  defaults = {
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:saip-test/training-AbCdEf"
  }
}
mock_resource "aws_cloudtrail" {
  defaults = {
    arn = "arn:aws:cloudtrail:eu-west-1:123456789012:trail/saip-test-data-events"
  }
}
