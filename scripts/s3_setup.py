"""Prepares the loopback S3 server for the tests and prints shell `export` lines.

Moto runs with authentication on: the first calls (allowed without credentials) create an
IAM user with full S3 access and its access key; everything after must be signed with that
key, so tests can check that wrong credentials are refused.
"""
import json
import sys

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
boot = dict(endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **boot)
iam.create_user(UserName="c360-test")
iam.put_user_policy(
    UserName="c360-test",
    PolicyName="s3-all",
    PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }),
)
key = iam.create_access_key(UserName="c360-test")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"],
                  aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket=bucket)
print(f"export C360_TEST_S3_ENDPOINT={endpoint}")
print(f"export C360_TEST_S3_BUCKET={bucket}")
print(f"export C360_TEST_S3_KEY_ID={key['AccessKeyId']}")
print(f"export C360_TEST_S3_SECRET={key['SecretAccessKey']}")
