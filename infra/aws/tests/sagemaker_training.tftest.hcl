# Unit tests of modules/sagemaker-training with a mocked AWS provider: the launcher role's policy
# is evaluated for concrete CreateTrainingJob requests (Bool, StringEquals, ForAllValues and Null
# operators), and the execution role is checked to reach only the gated input and model output.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  prefix                        = "saip-test"
  kms_key_arn                   = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
  launcher_principal_arns       = ["arn:aws:iam::123456789012:role/orchestrator"]
  training_image_repository_arn = "arn:aws:ecr:eu-west-1:123456789012:repository/saip-train"
  network = {
    vpc_id     = "vpc-0123456789abcdef0"
    vpc_cidr   = "10.0.0.0/16"
    subnet_ids = ["subnet-0123456789abcdef0"]
  }
  data = {
    input_bucket_arn  = "arn:aws:s3:::saip-test-artifacts"
    output_bucket_arn = "arn:aws:s3:::saip-test-artifacts"
  }
}

run "launcher_allows_only_secure_jobs" {
  command = apply
  module {
    source = "./modules/sagemaker-training"
  }

  assert {
    condition     = anytrue([for s in jsondecode(aws_iam_role_policy.launcher.policy).Statement : s.Effect == "Allow" && contains(s.Action, "sagemaker:CreateTrainingJob") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : op == "Null" ? (v == "true") == !contains(concat(keys({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }), keys({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] })), k) : op == "ForAllValues:StringEquals" ? alltrue([for x in lookup({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] }, k, []) : contains(v, x)]) : contains([for x in flatten([v]) : tostring(x)], lookup({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }, k, "<absent>"))])])])
    error_message = "an isolated, encrypted in-VPC job with the CMK must be allowed"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(aws_iam_role_policy.launcher.policy).Statement : s.Effect == "Allow" && contains(s.Action, "sagemaker:CreateTrainingJob") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : op == "Null" ? (v == "true") == !contains(concat(keys({ "sagemaker:NetworkIsolation" = "false", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }), keys({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] })), k) : op == "ForAllValues:StringEquals" ? alltrue([for x in lookup({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] }, k, []) : contains(v, x)]) : contains([for x in flatten([v]) : tostring(x)], lookup({ "sagemaker:NetworkIsolation" = "false", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }, k, "<absent>"))])])])
    error_message = "a job without network isolation must be refused"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(aws_iam_role_policy.launcher.policy).Statement : s.Effect == "Allow" && contains(s.Action, "sagemaker:CreateTrainingJob") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : op == "Null" ? (v == "true") == !contains(concat(keys({ "sagemaker:NetworkIsolation" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }), keys({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] })), k) : op == "ForAllValues:StringEquals" ? alltrue([for x in lookup({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] }, k, []) : contains(v, x)]) : contains([for x in flatten([v]) : tostring(x)], lookup({ "sagemaker:NetworkIsolation" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }, k, "<absent>"))])])])
    error_message = "a job without inter-container traffic encryption must be refused"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(aws_iam_role_policy.launcher.policy).Statement : s.Effect == "Allow" && contains(s.Action, "sagemaker:CreateTrainingJob") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : op == "Null" ? (v == "true") == !contains(concat(keys({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/other" }), keys({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] })), k) : op == "ForAllValues:StringEquals" ? alltrue([for x in lookup({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] }, k, []) : contains(v, x)]) : contains([for x in flatten([v]) : tostring(x)], lookup({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/other" }, k, "<absent>"))])])])
    error_message = "a job whose output is encrypted with another key must be refused"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(aws_iam_role_policy.launcher.policy).Statement : s.Effect == "Allow" && contains(s.Action, "sagemaker:CreateTrainingJob") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : op == "Null" ? (v == "true") == !contains(concat(keys({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }), keys({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0", "subnet-0fffffffffffffff0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] })), k) : op == "ForAllValues:StringEquals" ? alltrue([for x in lookup({ "sagemaker:VpcSubnets" = ["subnet-0123456789abcdef0", "subnet-0fffffffffffffff0"], "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id] }, k, []) : contains(v, x)]) : contains([for x in flatten([v]) : tostring(x)], lookup({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }, k, "<absent>"))])])]) && !anytrue([for s in jsondecode(aws_iam_role_policy.launcher.policy).Statement : s.Effect == "Allow" && contains(s.Action, "sagemaker:CreateTrainingJob") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : op == "Null" ? (v == "true") == !contains(concat(keys({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }), keys({})), k) : op == "ForAllValues:StringEquals" ? alltrue([for x in lookup({}, k, []) : contains(v, x)]) : contains([for x in flatten([v]) : tostring(x)], lookup({ "sagemaker:NetworkIsolation" = "true", "sagemaker:InterContainerTrafficEncryption" = "true", "sagemaker:VolumeKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd", "sagemaker:OutputKmsKey" = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd" }, k, "<absent>"))])])])
    error_message = "a job outside the given subnets, or outside any VPC, must be refused"
  }
  assert {
    condition     = output.training_job_defaults.EnableNetworkIsolation && output.training_job_defaults.EnableInterContainerTrafficEncryption && output.training_job_defaults.OutputDataConfig.KmsKeyId == var.kms_key_arn && output.training_job_defaults.ResourceConfig.VolumeKmsKeyId == var.kms_key_arn
    error_message = "the published defaults must be the configuration the launcher requires"
  }
}

run "execution_role_reaches_only_gated_input_and_model_output" {
  command = apply
  module {
    source = "./modules/sagemaker-training"
  }

  assert {
    condition = alltrue([for obj in ["arn:aws:s3:::saip-test-landing/accepted/c/1", "arn:aws:s3:::saip-test-landing/raw/x", "arn:aws:s3:::saip-test-artifacts/models/m"] :
    !anytrue([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : contains(s.Action, "s3:GetObject") && anytrue([for r in s.Resource : endswith(r, "*") ? startswith(obj, trimsuffix(r, "*")) : r == obj])])])
    error_message = "training must not read the encrypted batches, the raw archive or other models: only the gated export"
  }
  assert {
    condition     = [for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if contains(s.Action, "s3:PutObject")] == [["arn:aws:s3:::saip-test-artifacts/models/*"]]
    error_message = "training writes only under the model output prefix"
  }
  assert {
    condition     = alltrue([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : !contains(s.Resource, "*") || alltrue([for a in s.Action : startswith(a, "ec2:Describe") || a == "ecr:GetAuthorizationToken"])])
    error_message = "only actions without resource-level permissions may use Resource *"
  }
  assert {
    condition     = jsondecode(aws_iam_role.execution.assume_role_policy).Statement[0].Condition.ArnLike["aws:SourceArn"] == "arn:aws:sagemaker:eu-west-1:123456789012:training-job/saip-test-*"
    error_message = "only this prefix's training jobs may assume the execution role (confused deputy)"
  }
}

run "rejects_bad_input" {
  command = plan
  module {
    source = "./modules/sagemaker-training"
  }
  variables {
    data                          = { input_bucket_arn = "arn:aws:s3:::b1", output_bucket_arn = "arn:aws:s3:::b2", input_prefix = "accepted/" }
    launcher_principal_arns       = ["arn:aws:iam::123456789012:root"]
    training_image_repository_arn = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/saip-train:latest"
  }
  expect_failures = [var.data, var.launcher_principal_arns, var.training_image_repository_arn]
}

run "rejects_bad_key_network_and_prefix" {
  command = plan
  module {
    source = "./modules/sagemaker-training"
  }
  variables {
    prefix      = "Saip_Test"
    kms_key_arn = "alias/aws/sagemaker"
    network = {
      vpc_id     = "vpc-0123456789abcdef0"
      vpc_cidr   = "10.0.0.0/16"
      subnet_ids = []
    }
  }
  expect_failures = [var.prefix, var.kms_key_arn, var.network]
}
